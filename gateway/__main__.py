"""``python -m gateway``: the same as ``portal-gateway``."""

import sys

from gateway.cli import main

sys.exit(main())
