"""The ``fairchem-prune`` commands beside fairchem-core 2.x (:data:`fairchem_prune.hosts.COMMANDS`).

Each defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)`` like
:mod:`fairchem_prune.commands`, and takes fairchem 2 inference checkpoints.
"""
