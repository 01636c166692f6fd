"""``python -m haremq``: the same command line as the ``haremq`` script."""

import sys

from haremq.cli import main

sys.exit(main())
