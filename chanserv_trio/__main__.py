"""``python -m chanserv_trio``: the command line."""

import sys

from ._cli import main

sys.exit(main())
