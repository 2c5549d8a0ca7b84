"""Helpers of the converter tests: reading converted splits back with fairchem's own dataset, and
independent unit constants (CODATA 2018, not ASE's)."""

from __future__ import annotations

import numpy as np
from fairchem.core.datasets import LmdbDataset

KCAL_MOL_EV = 4184.0 / (1.602176634e-19 * 6.02214076e23)  # 0.0433641 eV
HARTREE_EV = 27.211386245988
BOHR_ANGSTROM = 0.529177210903


def read_split(folder) -> list:
    """All entries of a converted split folder (``OUT/train`` ...) as fairchem ``Data``."""
    dataset = LmdbDataset({"src": str(folder)})
    entries = [dataset[i] for i in range(len(dataset))]
    del dataset  # closes the LMDB environments
    return entries


def read_splits(out) -> dict[str, list]:
    return {name: read_split(out / name) for name in ("train", "val", "test")}


def position_key(positions) -> bytes:
    """A hashable fingerprint of one structure's positions (float32 precision, Å)."""
    return np.round(np.asarray(positions, dtype=np.float64), 4).tobytes()
