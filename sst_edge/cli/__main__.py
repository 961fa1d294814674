"""`python -m sst_edge.cli`: the same as `sst-edge`."""

import sys

from . import main

sys.exit(main())
