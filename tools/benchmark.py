#!/usr/bin/env python
"""Efficiency benchmark of block reduction (Table 2 analogue): throughput, GFLOPs per sample,
parameters, peak memory and fine-tuning step time per block count, reduced vs stock GemNet-OC or
EquiformerV2 (by the config's model name).

    python tools/benchmark.py --data data/oc20/val --blocks 6,5,4,3,2 --batch-size 4 --out bench.json
    python tools/benchmark.py --config configs/models/gemnet_oc_demo.yml --data demo_data/pretrain/val/emt_slabs.lmdb
    python tools/benchmark.py --config configs/models/equiformer_v2_31m.yml --blocks 8,7,6,5,4 --forces direct \
        --data data/oc20/val

(see fairchem_prune.benchmark for what each number means).
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("benchmark", prog="benchmark.py"))
