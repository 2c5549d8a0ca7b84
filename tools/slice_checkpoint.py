#!/usr/bin/env python
"""Slice a GemNet-OC or EquiformerV2 checkpoint (monolithic or hydra) to fewer blocks.

    python tools/slice_checkpoint.py --checkpoint IN.pt --num-blocks-kept 4 --output OUT.pt
    python tools/slice_checkpoint.py --checkpoint IN.pt --kept-blocks 0,1,2,4 --mlp-init random --output OUT.pt

OUT is an ordinary fairchem checkpoint (see fairchem_prune.slicing.slice_checkpoint).
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("slice", prog="slice_checkpoint.py"))
