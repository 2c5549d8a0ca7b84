#!/usr/bin/env python
"""Convert a JMP checkpoint (jmp-s.pt, jmp-l.pt of facebookresearch/JMP) into a fairchem checkpoint.

    python tools/convert_jmp.py --checkpoint jmp-l.pt --output jmp_l.pt                 # OC20 head, EMA weights
    python tools/convert_jmp.py --checkpoint jmp-l.pt --output jmp_l_bb.pt --task none   # backbone, fresh head

OUT is an ordinary fairchem checkpoint of gemnet_oc_reduced (see fairchem_prune.jmp).
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("convert-jmp", prog="convert_jmp.py"))
