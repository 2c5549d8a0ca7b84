#!/usr/bin/env python
"""Generate the demo data (deterministic for --seed).

    python tools/make_demo_data.py --out demo_data [--size small|medium] [--seed 0]

See fairchem_prune.demo.generation.make_demo_data for what is written.
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("make-demo-data", prog="make_demo_data.py"))
