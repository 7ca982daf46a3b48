"""``python -m enclave_dev.engine serve <model-dir> ...``: the development engine."""

import sys

from enclave_dev.engine._cli import main

sys.exit(main())
