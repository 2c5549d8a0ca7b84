#!/usr/bin/env python
"""GradCAM block relevance of a GemNet-OC or EquiformerV2 checkpoint on one or more LMDB data sets.

    python tools/block_relevance.py --checkpoint CKPT --data oc20/ --data ani1x/ --num-samples 1000 \
        --out relevance.json --plot relevance.png

See fairchem_prune.relevance for the definition and the JSON layout.
"""

import sys

from fairchem_prune.cli import tool_main

if __name__ == "__main__":
    sys.exit(tool_main("relevance", prog="block_relevance.py"))
