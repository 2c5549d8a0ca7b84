"""Models registered in fairchem's registry (imported lazily, see ``fairchem_prune._autoregister``)."""
