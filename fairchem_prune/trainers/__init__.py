"""Trainers registered in fairchem's registry (resolved lazily, see :mod:`fairchem_prune._autoregister`)."""
