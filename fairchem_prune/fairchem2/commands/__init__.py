"""The ``fairchem-prune`` commands beside fairchem-core 2.x (:data:`fairchem_prune.hosts.COMMANDS`).

Each defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)`` like
:mod:`fairchem_prune.commands`, and takes fairchem 2 inference checkpoints. :func:`before_command`
runs before any of them (:func:`fairchem_prune.cli.run`).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile


def before_command() -> None:
    """Start NVIDIA Warp without its console line. fairchem 2's GPU neighbour list imports
    ``nvalchemiops``, whose import calls ``warp.init()``; on a machine without a CUDA driver Warp's C
    library then writes "Warp CUDA warning: Could not find or load the NVIDIA CUDA driver. GPU execution
    will not be available." to stderr in every command. Imported here first, with the process's stderr
    (file descriptor 2) sent to a temporary file, that line goes to Python logging at DEBUG instead."""
    import importlib.util

    if importlib.util.find_spec("nvalchemiops") is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import nvalchemiops  # noqa: F401
        except Exception:  # fairchem's own import of it says what is wrong, if it matters
            pass
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().strip()
    if text:
        logging.getLogger("warp").debug(text)
