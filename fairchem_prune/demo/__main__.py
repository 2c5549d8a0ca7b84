"""``python -m fairchem_prune.demo``: same as ``fairchem-prune demo``."""

import sys

from fairchem_prune.cli import tool_main

sys.exit(tool_main("demo", prog="python -m fairchem_prune.demo"))
