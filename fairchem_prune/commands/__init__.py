"""One module per command of ``fairchem-prune`` / ``tools/*.py``.

Each defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)``; ``run`` calls one library
function and may raise :class:`fairchem_prune.errors.PruneError` for user-facing errors.
"""
