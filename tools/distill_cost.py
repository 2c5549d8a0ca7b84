#!/usr/bin/env python
"""Cost per training step of each distillation option, side by side.

    python tools/distill_cost.py --config configs/s2ef/distill_4b.yml -- \
        --task.distill.teacher_checkpoint=demo_out/teacher.pt --dataset.train.src=DATA

See fairchem_prune.distill_cost.
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("distill-cost", prog="distill_cost.py"))
