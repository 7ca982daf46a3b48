import sys

from enclave.cli import main

sys.exit(main())
