#!/usr/bin/env python
"""Convert raw downstream data into fairchem LMDBs OUT/{train,val,test}/data.lmdb.

    python tools/prepare_dataset.py rmd17 --raw rmd17_aspirin.npz --out data/rmd17_aspirin
    python tools/prepare_dataset.py qm9 --raw qm9.tar.bz2 --out data/qm9_u0 --target U0
    python tools/prepare_dataset.py ase --raw mine.extxyz --out data/mine --train-size 800 --val-size 100

See fairchem_prune.datasets for the kinds, their splits and units.
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("prepare-dataset", prog="prepare_dataset.py"))
