#!/usr/bin/env python
"""The page of PyG's wheel index that holds torch_scatter / torch_sparse / torch_cluster builds for a
torch build: ``<index>/torch-<major>.<minor>.0+<cuXYZ | cpu>.html`` (PyG publishes one page per torch
minor version and CUDA version). Used by ``setup.sh``.

    python tools/pyg_find_links.py [--index URL_OR_FOLDER] [--torch 2.4.1+cu121 --cuda 12.1]

Without --torch it describes the torch that this interpreter imports.
"""

import argparse

DEFAULT_INDEX = "https://data.pyg.org/whl"


def find_links(index: str, torch_version: str, cuda: str | None) -> str:
    """``find_links("https://data.pyg.org/whl", "2.4.1+cu121", "12.1")`` ->
    ``https://data.pyg.org/whl/torch-2.4.0+cu121.html``; ``cuda`` None (a CPU build) -> ``+cpu``."""
    major, minor = torch_version.split("+")[0].split(".")[:2]
    flavour = "cu" + cuda.replace(".", "") if cuda else "cpu"
    return f"{index.rstrip('/')}/torch-{major}.{minor}.0+{flavour}.html"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=DEFAULT_INDEX, help=f"the index's base URL or folder (default {DEFAULT_INDEX})")
    parser.add_argument("--torch", help="a torch version, e.g. 2.4.1+cu121 (default: the installed torch's)")
    parser.add_argument("--cuda", help="with --torch: its CUDA version, e.g. 12.1 (default: a CPU build)")
    args = parser.parse_args()
    if args.torch is None:
        import torch

        args.torch, args.cuda = torch.__version__, torch.version.cuda
    print(find_links(args.index, args.torch, args.cuda))


if __name__ == "__main__":
    main()
