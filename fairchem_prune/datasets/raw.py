"""Reading raw data files: checked access to their arrays (a missing key, a wrong shape or a
non-finite value is a :class:`PruneError` naming the file and the key) and labelled structures."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from fairchem_prune.errors import PruneError


#: JMP's atom tag for non-catalysis data (molecules, crystals, MOFs): every atom is tagged 2, the tag
#: whose atoms JMP's quadruplet interactions (``qint_tags: [1, 2]``) are built around
JMP_TAG = 2


def with_jmp_tags(atoms: Atoms) -> Atoms:
    """``atoms`` with tag :data:`JMP_TAG` on every atom, unless it carries tags of its own (e.g. a
    catalysis slab with OC20's 0 / 1 / 2)."""
    if not atoms.get_tags().any():
        atoms.set_tags(np.full(len(atoms), JMP_TAG))
    return atoms


def labelled(atoms: Atoms, energy: float, forces=None) -> Atoms:
    """``atoms`` with a single-point calculator holding the target ``energy`` (eV, or the target's
    unit) and, optionally, ``forces`` (n_atoms x 3, eV/Å)."""
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def require_file(path: str | Path) -> Path:
    """``path`` as a ``Path``; an error if it does not exist."""
    path = Path(path)
    if not path.exists():
        raise PruneError(f"{path} does not exist; pass the path of the raw file with --raw")
    return path


def field(arrays: Mapping, key: str, path: str | Path, shape: tuple, dtype=np.float64) -> np.ndarray:
    """``arrays[key]`` as ``dtype`` with ``shape``; ``None`` in ``shape`` matches any length, an
    ``int`` must match exactly. Floating-point fields must be finite."""
    if key not in arrays:
        raise PruneError(f"{path}: key '{key}' is missing; is this the right kind of raw file?")
    value = np.asarray(arrays[key])
    if value.ndim != len(shape) or any(want is not None and want != have for want, have in zip(shape, value.shape)):
        expected = "(" + ", ".join("N" if want is None else str(want) for want in shape) + ")"
        raise PruneError(f"{path}: key '{key}' has shape {value.shape}, expected {expected}")
    try:
        value = value.astype(dtype)
    except (TypeError, ValueError):
        raise PruneError(f"{path}: key '{key}' holds {value.dtype} values, expected numbers") from None
    if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
        raise PruneError(f"{path}: key '{key}' contains NaN or infinite values at {_first_bad(value)}")
    return value


def finite(value: float, path: str | Path, key: str) -> float:
    """``value`` as a float; an error naming ``path`` and ``key`` if it is NaN or infinite."""
    value = float(value)
    if not np.isfinite(value):
        raise PruneError(f"{path}: '{key}' is {value}; remove the entry or choose another target")
    return value


def _first_bad(value: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
