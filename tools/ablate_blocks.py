#!/usr/bin/env python
"""Layer-by-layer ablation: one fine-tuning run per removed block (GemNet-OC or EquiformerV2), then a summary.

    python tools/ablate_blocks.py --config configs/finetune/demo_s2ef_4b.yml --pretrained teacher.pt \
        --out ablation/ -- --cpu --optim.max_epochs=5
    python tools/ablate_blocks.py --config CFG --pretrained CKPT --out DIR --submit -- --num-gpus 1 --slurm-partition P
    python tools/ablate_blocks.py --summarize ablation/ --relevance relevance.json

Arguments after -- go to every `fairchem --mode train` call.
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("ablate", prog="ablate_blocks.py"))
