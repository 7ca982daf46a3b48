"""``python -m model_manager.devengine serve <model-dir> ...``: the development engine."""

import sys

from model_manager.devengine._cli import main

sys.exit(main())
