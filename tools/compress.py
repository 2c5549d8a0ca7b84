#!/usr/bin/env python
"""The fastest block count within an accuracy budget, fine-tuned: candidates, benchmark, pick, final model.

    python tools/compress.py --checkpoint jmp_l.pt --task configs/finetune/tasks/rmd17_aspirin.yml \
        --train data/rmd17_aspirin/train --val data/rmd17_aspirin/val --budget 5% --out compress_out/
    python tools/compress.py ... --submit -- --slurm-partition P --num-gpus 1   # candidates as Slurm jobs

Re-running the same command skips finished steps (and follows submitted jobs).
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("compress", prog="compress.py"))
