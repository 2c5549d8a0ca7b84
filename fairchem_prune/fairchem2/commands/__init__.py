"""The ``fairchem-prune`` commands beside fairchem-core 2.x (:data:`fairchem_prune.hosts.COMMANDS`).

Each defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)`` like
:mod:`fairchem_prune.commands`, and takes fairchem 2 inference checkpoints. :func:`before_command`
runs before any of them (:func:`fairchem_prune.cli.run`).
"""

from __future__ import annotations

from fairchem_prune.console import native_stderr_to_log


def before_command() -> None:
    """Start NVIDIA Warp without its console line. fairchem 2's GPU neighbour list imports
    ``nvalchemiops``, whose import calls ``warp.init()``; on a machine without a CUDA driver Warp's C
    library then writes "Warp CUDA warning: Could not find or load the NVIDIA CUDA driver. GPU execution
    will not be available." to stderr in every command. Imported here first, with the process's stderr
    (file descriptor 2) sent to Python logging at DEBUG, that line leaves the console."""
    import importlib.util

    if importlib.util.find_spec("nvalchemiops") is None:
        return
    with native_stderr_to_log("warp"):
        try:
            import nvalchemiops  # noqa: F401
        except Exception:  # fairchem's own import of it says what is wrong, if it matters
            pass
