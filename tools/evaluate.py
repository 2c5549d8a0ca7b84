#!/usr/bin/env python
"""Score checkpoints as the OCP leaderboards do, or write a submission file.

    python tools/evaluate.py --checkpoint teacher=jmp_l.pt --checkpoint br4=br_4b.pt \
        --split val_id=s2ef/val_id --split val_ood_ads=s2ef/val_ood_ads --out evaluate_out
    python tools/evaluate.py --checkpoint br4=br_4b.pt --submission OC20 --split id=s2ef/test_id \
        --split ood_ads=s2ef/test_ood_ads --split ood_cat=s2ef/test_ood_cat --split ood_both=s2ef/test_ood_both

See fairchem_prune.leaderboard.
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("evaluate", prog="evaluate.py"))
