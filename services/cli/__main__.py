"""``python -m services.cli …``: the same as ``certfleet …``."""

import sys

from services.cli.main import main

sys.exit(main())
