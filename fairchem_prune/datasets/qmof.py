"""QMOF (``qmof.json`` with the properties and ``qmof_structure_data.json`` with pymatgen structures,
side by side): periodic metal-organic frameworks, PBE band gap (eV) as target, 80/10/10 split."""

from __future__ import annotations

import json
from pathlib import Path

from ase import Atoms

from fairchem_prune.console import progress
from fairchem_prune.datasets.raw import finite, labelled, require_file
from fairchem_prune.datasets.splits import SplitSpec
from fairchem_prune.errors import PruneError

SPLIT = SplitSpec(train=0.8, val=0.1, test=None)
PROPERTIES = "qmof.json"
STRUCTURES = "qmof_structure_data.json"


def read(raw: str | Path, target: str = "outputs.pbe.bandgap") -> list[Atoms]:
    """The structures of ``qmof.json`` (in its order) with the value at the dotted ``target`` path
    (default: the PBE band gap, eV)."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.core import Structure

    raw = require_file(raw)
    folder = raw if raw.is_dir() else raw.parent
    entries = _load(require_file(folder / PROPERTIES))
    structures = {s.get("qmof_id"): s.get("structure") for s in _load(require_file(folder / STRUCTURES))}
    out = []
    for entry in progress(entries, desc=f"reading {folder.name}/{PROPERTIES}"):
        qmof_id = entry.get("qmof_id")
        if structures.get(qmof_id) is None:
            raise PruneError(f"{folder / STRUCTURES}: no 'structure' for qmof_id {qmof_id!r} of {PROPERTIES}")
        value = entry
        for key in target.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            raise PruneError(f"{folder / PROPERTIES}: {qmof_id} has no '{target}'; choose another --target")
        atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(structures[qmof_id]))
        out.append(labelled(atoms, finite(value, folder / PROPERTIES, f"{qmof_id} {target}")))
    return out


def split(raw: str | Path, sizes: dict[str, int | None]) -> SplitSpec:
    return SPLIT


def _load(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PruneError(f"{path} is not a readable JSON file ({err})") from None
    if not isinstance(data, list):
        raise PruneError(f"{path}: expected a list of entries with 'qmof_id'")
    return data
