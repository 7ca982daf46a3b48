"""DEVELOPMENT ONLY: the fakes the service, its tests and ``enclave demo`` run on.

No wheel contains this package (pyproject.toml's package list; tests/deploy/
test_production_contents.py scans the wheel for what these modules can do), so neither does
the container nor the CVM image. An editable install (``pip install -e .``) or a source
checkout on ``PYTHONPATH`` has it. Product code reaches it only through
``enclave.development.load(setting)``, keyed by the ``insecure_*`` setting that turns each part
on:

- ``tee``: a simulated Intel TDX platform (a SIMULATED Intel-like PKI whose quotes the real
  dcap-qvl verifies against the simulated root) and its quote provider
  (``insecure_allow_simulated_tee``);
- ``gpu``: a simulated NVIDIA-like GPU signing PKI and its evidence provider
  (``insecure_allow_simulated_gpu``);
- ``engine``: the development engine, an OpenAI-compatible imitation of vLLM that is not a
  language model, run as ``python -m enclave_dev.engine`` (``insecure_dev_engine``);
- ``demo`` (``enclave demo``), ``local`` (a whole loopback service on the simulated TEE and the
  development engine, for tests and benchmarks) and ``tinymodel`` (the tiny random-weight
  model the real-vLLM tests serve).
"""
