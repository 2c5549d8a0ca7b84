"""``python -m fairchem_prune <command>``: same as the ``fairchem-prune`` console script."""

import sys

from fairchem_prune.cli import main

sys.exit(main())
