"""fairchem-prune: block reduction, block relevance and distillation for FAIRChem 1.x models.

This module stays import-light (no torch): it is imported at interpreter start-up by the
``fairchem_prune_autoregister.pth`` hook. Import the sub-modules for the actual functionality.
"""

__version__ = "0.1.0"
