"""The package list, the one thing pyproject.toml cannot say: which packages an install holds.

Every wheel (``pip wheel .``, the container, the CVM image) holds the product packages only;
the development package ``enclave_dev`` (the TDX and GPU simulators, the development engine,
the demo) is added to an editable install (``pip install -e .``) alone, so that its import
finder maps ``enclave_dev`` to the checkout as it maps the others. tests/deploy/
test_production_contents.py builds the wheel and scans it for what the fakes can do.
"""

import sys

from setuptools import find_packages, setup

PRODUCT = [
    "enclave",
    "enclave.*",
    "attestation",
    "attestation.*",
    "model_manager",
    "model_manager.*",
]
DEVELOPMENT = ["enclave_dev", "enclave_dev.*"]

# setuptools' PEP 660 backend runs this file with the ``editable_wheel`` command.
_EDITABLE = "editable_wheel" in sys.argv

setup(packages=find_packages(include=PRODUCT + DEVELOPMENT if _EDITABLE else PRODUCT))
