#!/usr/bin/env python
"""NVE molecular dynamics of each model from the same structures and velocities.

    python tools/md_check.py --checkpoint teacher=demo_out/teacher.pt --checkpoint br4=demo_out/reduction/br_4b.pt \
        --structures demo_out/data/ethanol/test --steps 500 --timestep 0.5

See fairchem_prune.md_check.
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("md-check", prog="md_check.py"))
