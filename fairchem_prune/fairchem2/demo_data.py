"""The demo's data on fairchem 2: :func:`~fairchem_prune.demo.generation.make_demo_data`'s pre-training
mix as fairchem 2 ASE-LMDB data sets (``pretrain/{train,val}/<source>/data.0000.aselmdb`` with
``metadata.npz``, what fairchem's ``create_finetune_dataset.py`` writes and ``AseDBDataset`` reads),
each source one UMA task (:data:`SOURCE_TASKS`): the xTB molecules are ``omol`` (neutral singlets,
charge 0 and spin 1 in ``atoms.info``), the EMT slabs ``oc20``; and the downstream ethanol task (the
rMD17-format file) as a fine-tuning template of fairchem's ``create_uma_finetune_dataset.py``.
Energies in eV, forces in eV/Å.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from fairchem_prune.errors import PruneError
from fairchem_prune.fairchem2.data import default_charge_spin

#: demo source -> the UMA task (fairchem 2 dataset name) its structures are
SOURCE_TASKS = {"xtb_molecules": "omol", "emt_slabs": "oc20"}
#: the data file of one ASE-LMDB folder
DATABASE = "data.0000.aselmdb"
#: the fine-tuning template create_uma_finetune_dataset.py writes
FINETUNE_TEMPLATE = "uma_sm_finetune_template.yaml"
#: the downstream task's UMA task: ethanol is a molecule
ETHANOL_TASK = "omol"


def write_aselmdb(folder: Path, structures: list[Atoms], sids: list[int], info: dict, force: bool = False) -> int:
    """``folder/data.0000.aselmdb`` (each structure's ``atoms.info`` with its ``sid`` and ``info`` as its
    row data, as fairchem's script stores it) and ``folder/metadata.npz`` (``natoms``); returns the count.
    An existing folder is an error unless ``force``."""
    from ase.db import connect

    import fairchem.core.datasets  # noqa: F401  (registers ASE's .aselmdb backend)

    if folder.exists():
        if not force:
            raise PruneError(f"{folder} already exists; pass --force to overwrite or choose another --out")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with connect(str(folder / DATABASE)) as db:
        for atoms, sid in zip(structures, sids):
            db.write(atoms, data={**atoms.info, "sid": str(sid), **info})
    np.savez_compressed(folder / "metadata.npz", natoms=np.array([len(a) for a in structures]))
    return len(structures)


def write_source(path: Path, source: str, structures: list[Atoms], sids: list[int], force: bool) -> int:
    """``make_demo_data``'s writer on fairchem 2: one source's split as an ASE-LMDB folder ``path``,
    with the charge and spin of its task (:data:`SOURCE_TASKS`) and ``sid`` = index in the source."""
    charge, spin = default_charge_spin(SOURCE_TASKS[source])
    return write_aselmdb(path, structures, sids, {"charge": charge, "spin": spin}, force)


@dataclass(frozen=True)
class MixData:
    """A fairchem 2 demo data folder: ``pretrain/{train,val}/<source>/`` and ``raw/``."""

    root: Path
    manifest: dict

    def split(self, split: str) -> dict[str, Path]:
        """The ASE-LMDB folder of each source's ``split`` (``train`` or ``val``)."""
        return {source: self.root / "pretrain" / split / source for source in SOURCE_TASKS}


def mix_data(data: str | Path | None, size: str, seed: int, say, spec=None) -> MixData:
    """The folder ``data`` (checked), or the cached ``size`` / ``seed`` demo mix in fairchem 2's format
    (``<cache>/demo_data/<size>-seed<seed>-fairchem2``), generated on first use with the
    :class:`~fairchem_prune.demo.generation.DemoSize` ``spec`` (default: ``SIZES[size]``; a given folder needs none)."""
    from fairchem_prune.demo.data import ETHANOL_RAW, demo_folder
    from fairchem_prune.demo.generation import SIZES, demo_manifest

    root = demo_folder(data, size, spec or SIZES.get(size), seed, say, writer=write_source, suffix="-fairchem2")
    found = MixData(root, demo_manifest(root))
    folders = [*found.split("train").values(), *found.split("val").values()]
    missing = [str(p) for p in folders if not (p / DATABASE).is_file()]
    missing += [str(root / ETHANOL_RAW)] if not (root / ETHANOL_RAW).is_file() else []
    if missing:
        raise PruneError(f"demo data {root} is incomplete or not in fairchem 2's format (missing {missing[0]}); "
                         "remove it and run the demo without --data (it generates its data)")
    say(f"data: {root} ({', '.join(f'{k} {v}' for k, v in found.manifest['counts'].items() if k.startswith('pretrain'))})")
    return found


def normaliser_and_references(folder: Path) -> tuple[float, list[float]]:
    """The force RMS (eV/Å, free atoms) and linear element references (eV per element, 100 entries) of the
    ASE-LMDB ``folder``, by fairchem's ``compute_normalizer_and_linear_reference``."""
    from fairchem.core.scripts.create_finetune_dataset import compute_normalizer_and_linear_reference

    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar: a second at most
        rms, references = compute_normalizer_and_linear_reference(folder, 1)
    return float(rms), [float(x) for x in references]


def ethanol_task(mix: MixData, out: Path, sizes: tuple[int, int, int], seed: int, force: bool, say) -> Path:
    """``out/{train,val,test}/`` (ASE-LMDB, task omol) from the rMD17-format ethanol file with
    ``sizes`` = (train, val, test) frames drawn as ``prepare-dataset`` draws them, and the energy +
    forces fine-tuning template of fairchem's ``create_uma_finetune_dataset.py``
    (``out/uma_sm_finetune_template.yaml``, ``out/data/``); returns the template. Kept when complete."""
    from unittest import mock

    from fairchem.core.scripts import create_uma_finetune_dataset as script

    from fairchem_prune.datasets import rmd17
    from fairchem_prune.datasets.splits import split_indices, split_sizes
    from fairchem_prune.demo.data import ETHANOL_RAW
    from fairchem_prune.resources import config_path

    template = out / FINETUNE_TEMPLATE
    if template.is_file() and (out / "sizes.json").is_file() and not force:
        if json.loads((out / "sizes.json").read_text()) == list(sizes):
            return template
    raw = mix.root / ETHANOL_RAW
    structures = rmd17.read(raw)
    wanted = dict(zip(("train", "val", "test"), sizes))
    counts = split_sizes(len(structures), rmd17.split(raw, wanted), wanted, str(raw))
    charge, spin = default_charge_spin(ETHANOL_TASK)
    for split, index in split_indices(len(structures), counts, seed).items():
        write_aselmdb(out / split, [structures[i] for i in index], [int(i) for i in index],
                      {"charge": charge, "spin": spin}, force=True)
    rms, references = normaliser_and_references(out / "train")
    with mock.patch.object(script, "TEMPLATE_DIR", config_path("fairchem2/uma_finetune")):
        script.create_yaml(train_path=str(out / "train"), val_path=str(out / "val"), force_rms=rms,
                           linref_coeff=references, output_dir=out, dataset_name=ETHANOL_TASK,
                           regression_tasks="ef", base_model_name="uma-s-1p1")
    (out / "sizes.json").write_text(json.dumps(list(sizes)) + "\n")
    say(f"data: downstream ethanol task -> {out} ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return template
