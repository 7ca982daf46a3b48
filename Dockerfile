# syntax=docker/dockerfile:1
#
# The enclave service on the official vLLM OpenAI image. The service is the container's only
# process at start; it spawns `vllm serve` itself (on a Unix socket in /run/enclave) when a
# model is loaded, and it is the only thing listening on the network (RA-TLS on 8443).
#
# Base image: pinned by tag AND by the multi-platform index digest. The digest was taken from
# public records of the v0.31.0 tag (the same value in several independent projects); confirm
# it before a release with
#     docker buildx imagetools inspect vllm/vllm-openai:v0.31.0
# and bump both together (see docs/operations.md, "Container image"). The engine flags and the
# log lines the service reads are those of vLLM 0.31 and 0.32 (docs/model-lifecycle.md,
# "Known-good vLLM versions"); 0.32.0 is the release CI runs for real (CPU build).
#
# No secret is baked in: the load token, the push token and any Hugging Face token come from
# the environment (or a mounted file) at run time. Models are mounted read-only at /models,
# their dm-verity root hashes at /etc/enclave/roothash.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.31.0@sha256:c1c9f6fd5c109ba7f0546a59f5b2f15fb87f64c77782e90a27b648b42a8e67c3

# ---- build: a wheel of the project (no source tree in the final image)
FROM ${VLLM_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY enclave ./enclave
COPY attestation ./attestation
COPY model_manager ./model_manager
RUN python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime
FROM ${VLLM_IMAGE}

# The service lives in its own virtual environment so its dependencies never change the
# packages vLLM was built and tested with; it never imports vLLM, it only runs the `vllm`
# program. `--without-pip` needs no python3-venv package; pip installs into it with --python.
COPY --from=build /wheels /tmp/wheels
RUN python3 -m venv --without-pip /opt/enclave \
    && python3 -m pip --python /opt/enclave/bin/python install --no-cache-dir \
        "$(echo /tmp/wheels/enclave_inference-*.whl)[server]" \
    && rm -rf /tmp/wheels \
    && groupadd --system --gid 10001 enclave \
    && useradd --system --uid 10001 --gid enclave --home-dir /home/enclave --create-home \
        --shell /usr/sbin/nologin enclave \
    && install -d -o enclave -g enclave -m 0750 /var/lib/enclave /run/enclave \
    && install -d -o root -g root -m 0755 /models /etc/enclave/roothash

ENV PATH=/opt/enclave/bin:$PATH \
    HOME=/home/enclave \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    ENCLAVE_PORT=8443 \
    ENCLAVE_MODELS_DIR=/models \
    ENCLAVE_ROOTHASH_DIR=/etc/enclave/roothash \
    ENCLAVE_STATE_DIR=/var/lib/enclave \
    ENCLAVE_RUN_DIR=/run/enclave

USER 10001:10001
WORKDIR /home/enclave
EXPOSE 8443

# Liveness only: /health says the process serves. TLS is RA-TLS with a self-signed leaf, so the
# probe does not verify the chain; it sends no data and reads only the status code. Clients
# verify the attestation evidence instead (docs/attestation.md).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/opt/enclave/bin/python", "-c", "import os, ssl, urllib.request as r; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE; r.urlopen('https://127.0.0.1:%s/health' % os.environ.get('ENCLAVE_PORT', '8443'), context=c, timeout=5)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/enclave/bin/enclave", "serve"]
