"""``python -m eqmonitor``: the command line (see :mod:`eqmonitor.cli`)."""

import sys

from eqmonitor.cli import main

sys.exit(main())
