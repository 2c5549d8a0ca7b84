"""Scoring a fairchem 2 inference checkpoint on labelled structures as the S2EF leaderboard scores:
predictions by fairchem's own inference path (``load_predict_unit(...).predict``: energies in eV with
the element references undone, forces in eV/Å) on batches made as fairchem 2 makes them
(``AtomicData.from_ase`` with the task's name, charge and spin), metrics by fairchem's ``Evaluator``
(:data:`S2EF_METRICS`, the 1.x scoring's set), forces of the free atoms only (fixed atoms,
``FixAtoms``, left out as fairchem's validation leaves them out with ``eval_on_free_atoms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from fairchem_prune.console import chatter_to, progress

#: energy and force MAE (eV, eV/Å), force cosine, and the share of structures with energy within 0.02 eV
#: and every force within 0.03 eV/Å (EFwT)
S2EF_METRICS = {"energy": ["mae"], "forces": ["mae", "cosine_similarity", "energy_forces_within_threshold"]}


def _batches(structures: Sequence, task: str, batch_size: int):
    from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch

    for start in range(0, len(structures), batch_size):
        chunk = structures[start:start + batch_size]
        yield atomicdata_list_to_batch([AtomicData.from_ase(a, task_name=task, r_data_keys=["spin", "charge"])
                                        for a in chunk])


def evaluate_structures(checkpoint: str | Path, datasets: dict[str, tuple[Sequence, str]], batch_size: int = 16,
                        device: str = "cpu", log: str | Path | None = None, desc: str | None = None) -> dict[str, dict]:
    """``{name: {"energy_mae", "forces_mae", "forces_cosine_similarity", "energy_forces_within_threshold"}}``
    of ``checkpoint`` (EMA weights, as fairchem predicts) on each ``name: (structures, task)`` of
    ``datasets`` (ASE atoms with energy and forces labels; charge and spin in ``info``); fairchem's
    messages go to ``log``."""
    from fairchem.core.modules.evaluator import Evaluator
    from fairchem.core.units.mlip_unit import load_predict_unit

    from fairchem_prune.fairchem2.calculators import inference_settings
    from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint

    read_inference_checkpoint(checkpoint)  # one clear error for a missing, corrupt or foreign file
    total = sum(-(-len(s) // batch_size) for s, _ in datasets.values())
    results = {}
    with chatter_to(log), progress(total=total, desc=desc or f"scoring {Path(checkpoint).name}", unit="batch") as bar:
        unit = load_predict_unit(str(checkpoint), inference_settings=inference_settings("batch"), device=device)
        for name, (structures, task) in datasets.items():
            evaluator, metrics = Evaluator(task="s2ef", eval_metrics=S2EF_METRICS), {}
            for batch in _batches(structures, task, batch_size):
                predicted = unit.predict(batch)
                free = batch.fixed == 0
                system = batch.batch[free]
                natoms = torch.zeros_like(batch.natoms).index_add_(0, system, torch.ones_like(system))
                prediction = {"energy": predicted["energy"].detach().double().cpu(),
                              "forces": predicted["forces"].detach().double().cpu()[free], "natoms": natoms}
                target = {"energy": batch.energy.double(), "forces": batch.forces.double()[free], "natoms": natoms}
                metrics = evaluator.eval(prediction, target, prev_metrics=metrics)
                bar.update()
            results[name] = {key: float(value["metric"]) for key, value in metrics.items()}
    return results
