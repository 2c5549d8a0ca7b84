"""Shared fixtures: tiny GemNet-OC configurations, structures and checkpoints written in fairchem's
own format."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, fcc111, molecule
from fairchem.core.datasets import data_list_collater
from fairchem.core.preprocessing import AtomsToGraphs

import fairchem_prune.models.gemnet_oc_reduced  # noqa: F401  (registers the names in this process)
from slurm_cluster import pytest_collection_modifyitems  # noqa: F401  (the slurm marker's skip)

FAIRCHEM = Path(sys.executable).parent / "fairchem"


def fairchem(*args, cwd) -> str:
    """Run the stock ``fairchem`` command (one thread per process); its output, asserting success."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # no thread oversubscription on a shared machine
    result = subprocess.run([str(FAIRCHEM), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


#: a GemNet-OC with every interaction type on, small enough to run in milliseconds
TINY_GEMNET = dict(
    num_spherical=3, num_radial=8, num_blocks=5,
    emb_size_atom=16, emb_size_edge=24, emb_size_trip_in=8, emb_size_trip_out=8,
    emb_size_quad_in=4, emb_size_quad_out=4, emb_size_aint_in=4, emb_size_aint_out=4,
    emb_size_rbf=4, emb_size_cbf=4, emb_size_sbf=8,
    num_before_skip=1, num_after_skip=1, num_concat=1, num_atom=1, num_output_afteratom=1,
    num_atom_emb_layers=1, num_global_out_layers=1,
    regress_forces=True, direct_forces=True, cutoff=5.0, max_neighbors=20,
    cutoff_qint=5.0, cutoff_aeaint=5.0, cutoff_aint=6.0,
    max_neighbors_qint=8, max_neighbors_aeaint=20, max_neighbors_aint=30,
    quad_interaction=True, atom_edge_interaction=True, edge_atom_interaction=True,
    atom_interaction=True, otf_graph=True, use_pbc=True, num_elements=83,
)

TINY_HEADS = {
    "energy": {"module": "gemnet_oc_energy_and_grad_force_head", "num_global_out_layers": 1},
    "forces": {"module": "gemnet_oc_force_head", "num_global_out_layers": 1},
}


#: a 4-block EquiformerV2 small enough to run in ~0.1 s; grid_resolution 12 keeps its S2-grid
#: equivariance error near float32 round-off (the default grid for lmax 2 gives ~15 % force errors)
TINY_EQV2 = dict(
    num_layers=4, sphere_channels=8, attn_hidden_channels=8, num_heads=2, attn_alpha_channels=4,
    attn_value_channels=4, ffn_hidden_channels=8, lmax_list=[2], mmax_list=[1], grid_resolution=12,
    edge_channels=8, num_sphere_samples=16, max_neighbors=20, max_radius=5.0, max_num_elements=90,
    use_pbc=True, otf_graph=True, regress_forces=True,
)
TINY_EQV2_HEADS = {"energy": {"module": "equiformer_v2_energy_head"}, "forces": {"module": "equiformer_v2_force_head"}}


def tiny_config(**changes) -> dict:
    config = copy.deepcopy(TINY_GEMNET)
    config.update(changes)
    return config


def hydra_config(**changes) -> dict:
    return {
        "name": "hydra",
        "backbone": {"model": "gemnet_oc_backbone", **tiny_config(**changes)},
        "heads": copy.deepcopy(TINY_HEADS),
        "otf_graph": True,
    }


def randomise_scale_factors(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every ScaleFactor a distinct non-trivial value, so that a misplaced one shows."""
    from fairchem.core.modules.scaling.scale_factor import ScaleFactor

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ScaleFactor):
                module.scale_factor.fill_(0.5 + torch.rand((), generator=gen).item())


def build_stock(model_config: dict, seed: int = 0) -> torch.nn.Module:
    """A stock fairchem model with random weights and scale factors."""
    from fairchem.core.common.registry import registry
    import fairchem.core.models.base  # noqa: F401
    import fairchem.core.models.gemnet_oc.gemnet_oc  # noqa: F401

    torch.manual_seed(seed)
    config = copy.deepcopy(model_config)
    model = registry.get_model_class(config.pop("name"))(**config)
    randomise_scale_factors(model, seed)
    return model.eval()


#: the non-model config sections of an S2EF checkpoint, as fairchem's trainer saves them
S2EF_SECTIONS = {
    "trainer": "ocp",
    "dataset": {"format": "lmdb", "src": "unused"},
    "outputs": {
        "energy": {"shape": 1, "level": "system"},
        "forces": {"irrep_dim": 1, "level": "atom", "train_on_free_atoms": True, "eval_on_free_atoms": True},
    },
    "loss_functions": [{"energy": {"fn": "mae", "coefficient": 1}}, {"forces": {"fn": "l2mae", "coefficient": 10}}],
    "evaluation_metrics": {"metrics": {"energy": ["mae"], "forces": ["mae"]}, "primary_metric": "forces_mae"},
    "optim": {"batch_size": 4, "eval_batch_size": 4},
    "task": {},
}


#: a fine-tuning task on the EMT slab LMDBs (``emt_lmdb``): what ``fairchem-prune compress --task`` takes
S2EF_TASK = {
    "model": {"regress_forces": True, "use_pbc": True},
    "dataset": {"train": {"format": "lmdb", "src": "set/by/compress", "transforms": {"normalizer": {"fit": {
        "targets": {"energy": {}, "forces": {"mean": 0.0}}, "batch_size": 8}}}}},
    **{key: copy.deepcopy(S2EF_SECTIONS[key]) for key in ("outputs", "loss_functions", "evaluation_metrics")},
    "optim": {"batch_size": 4, "eval_batch_size": 8, "num_workers": 0, "lr_initial": 1.0e-3},
}


def write_task(path, **changes):
    """:data:`S2EF_TASK` with top-level ``changes`` as YAML at ``path``; returns ``path``."""
    import yaml

    Path(path).write_text(yaml.safe_dump({**copy.deepcopy(S2EF_TASK), **changes}))
    return path


def build_perturbed(model_config: dict, seed: int = 0) -> torch.nn.Module:
    """A stock fairchem model (any registered name) whose every parameter, norms included, is
    shifted by random noise, so that a misplaced one shows."""
    from fairchem.core.common.registry import registry

    torch.manual_seed(seed)
    config = copy.deepcopy(model_config)
    model = registry.get_model_class(config.pop("name"))(**config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def hand_copy_gemnet(source: torch.nn.Module, target: torch.nn.Module, kept, d_atom, d_edge, heads_source=None, heads_target=None):
    """Copy the weights of ``source`` keeping blocks ``kept`` into the stock ``target``, module by
    module: an independent re-statement of what the slicing must do."""
    for name, child in target.named_children():
        if name == "int_blocks":
            for j, k in enumerate(kept):
                child[j].load_state_dict(source.int_blocks[k].state_dict())
        elif name == "out_blocks":
            child[0].load_state_dict(source.out_blocks[0].state_dict())
            for j, k in enumerate(kept):
                child[j + 1].load_state_dict(source.out_blocks[k + 1].state_dict())
        elif child is not None and name not in ("out_mlp_E", "out_mlp_F", "out_energy", "out_forces"):
            child.load_state_dict(getattr(source, name).state_dict())
    mlp_owner_src = heads_source or {"E": source, "F": source}
    mlp_owner_dst = heads_target or {"E": target, "F": target}
    for branch, width in (("E", d_atom), ("F", d_edge)):
        src_mlp = getattr(mlp_owner_src[branch], f"out_mlp_{branch}")
        dst_mlp = getattr(mlp_owner_dst[branch], f"out_mlp_{branch}")
        columns = [p * width + i for p in [0] + [k + 1 for k in kept] for i in range(width)]
        with torch.no_grad():
            dst_mlp[0].linear.weight.copy_(src_mlp[0].linear.weight[:, columns])
        for i in range(1, len(dst_mlp)):
            dst_mlp[i].load_state_dict(src_mlp[i].state_dict())
        out_name = "out_energy" if branch == "E" else "out_forces"
        getattr(mlp_owner_dst[branch], out_name).load_state_dict(getattr(mlp_owner_src[branch], out_name).state_dict())


def energy_forces(model, batch, seed: int = 1):
    """(energy, forces) of a monolithic or hydra model, detached. The seed fixes EquiformerV2's random
    edge-frame roll (GemNet-OC is deterministic)."""
    torch.manual_seed(seed)
    out = model(batch)
    if isinstance(out["energy"], dict):  # hydra: {head: {property: tensor}}
        return out["energy"]["energy"].detach(), out["forces"]["forces"].detach()
    return out["energy"].detach(), out["forces"].detach()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|"""
    return ((a - b).abs().max() / b.abs().max()).item()


def write_checkpoint(path, model: torch.nn.Module, model_config: dict, ema_params=None) -> None:
    """A checkpoint laid out exactly as fairchem's ``BaseTrainer.save`` writes it."""
    checkpoint = {
        "state_dict": model.state_dict(),
        "normalizers": {},
        "elementrefs": {},
        "config": {"model": copy.deepcopy(model_config), **copy.deepcopy(S2EF_SECTIONS)},
        "val_metrics": None,
        "amp": None,
        "epoch": 3,
        "step": 30,
        "ema": None,
    }
    if ema_params is not None:
        checkpoint["ema"] = {"decay": 0.999, "num_updates": 30, "shadow_params": ema_params, "collected_params": []}
    torch.save(checkpoint, path)


def molecule_atoms() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.cell = np.eye(3) * 20.0
    atoms.center()
    atoms.pbc = False
    return atoms


def slab_atoms() -> Atoms:
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "O", 1.8, "fcc")
    slab.rattle(0.05, seed=1)
    return slab


def to_batch(atoms_list, dtype=torch.float32):
    """Collated fairchem graphs; positions in ``dtype`` (fairchem's PBC graph code keeps cells float32)."""
    a2g = AtomsToGraphs(r_edges=False, r_pbc=True, r_energy=False, r_forces=False)
    data = [a2g.convert(a) for a in atoms_list]
    for d in data:
        d.pos = d.pos.to(dtype)
        d.tags = d.tags.long()
    return data_list_collater(data)


def rmd17_lmdbs(tmp_path: Path) -> Path:
    """24 rattled ethanol frames in rMD17's format (kcal/mol), converted by the rmd17 converter."""
    from fairchem_prune.datasets import prepare_dataset

    rng = np.random.default_rng(0)
    atoms = molecule_atoms()
    np.savez(tmp_path / "rmd17_aspirin.npz", nuclear_charges=atoms.numbers,
             coords=atoms.positions + rng.normal(0, 0.05, (24, len(atoms), 3)),
             energies=rng.normal(-97_000.0, 2.0, 24), forces=rng.normal(0, 20.0, (24, len(atoms), 3)))
    prepare_dataset("rmd17", tmp_path / "rmd17_aspirin.npz", tmp_path / "data", train_size=16, val_size=4, test_size=4)
    return tmp_path / "data"


@pytest.fixture
def one_thread():
    """For tiny models: on a shared machine, intra-op threads cost ~20x more than they save."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def batch():
    """Ethanol in a box and a Cu(111) slab with O in one batch."""
    return to_batch([molecule_atoms(), slab_atoms()])


@pytest.fixture(scope="session")
def emt_lmdb(tmp_path_factory):
    """Tiny S2EF LMDBs of EMT-labelled slabs: {"train": folder (24), "val": folder (8), "test":
    folder (8)}."""
    from fairchem_prune.demo.generation import emt_slabs
    from fairchem_prune.datasets.lmdb_io import atoms_to_data, write_lmdb

    root = tmp_path_factory.mktemp("emt")
    structures = emt_slabs(40, seed=3)
    folders = {}
    for name, part, offset in (("train", structures[:24], 0), ("val", structures[24:32], 24),
                               ("test", structures[32:], 32)):
        folders[name] = root / name
        write_lmdb(folders[name] / "data.lmdb", (atoms_to_data(a, offset + i) for i, a in enumerate(part)))
    return folders


@pytest.fixture
def stock_checkpoint(tmp_path):
    """(path, model, config) of a random stock 5-block ``gemnet_oc`` checkpoint."""
    config = {"name": "gemnet_oc", **tiny_config()}
    model = build_stock(config)
    path = tmp_path / "stock.pt"
    write_checkpoint(path, model, config)
    return path, model, config


@pytest.fixture(scope="session")
def tiny_gemnet_files(tmp_path_factory):
    """(config YAML of the tiny 5-block GemNet-OC, LMDB file of 8 EMT slabs)."""
    import yaml

    from fairchem_prune.demo.generation import emt_slabs
    from fairchem_prune.datasets.lmdb_io import atoms_to_data, write_lmdb

    root = tmp_path_factory.mktemp("tiny_gemnet")
    config = root / "tiny.yml"
    config.write_text(yaml.safe_dump({"model": {"name": "gemnet_oc", **tiny_config()}}))
    data = root / "slabs.lmdb"
    write_lmdb(data, (atoms_to_data(a, i) for i, a in enumerate(emt_slabs(8, seed=0))))
    return config, data


def random_rotation(seed: int) -> np.ndarray:
    """A proper 3x3 rotation matrix (det +1), deterministic for ``seed``."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def rotated_outputs(model, atoms, seed: int = 5):
    """(rotation, (E, F) of ``atoms``, (E, F) of ``atoms`` rotated and translated)."""
    rot = random_rotation(seed)
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T + np.array([0.7, -1.3, 0.4])
    moved.cell = atoms.cell[:] @ rot.T
    return rot, energy_forces(model, to_batch([atoms])), energy_forces(model, to_batch([moved]))


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A FAIRCHEM_PRUNE_CACHE folder shared by every test that runs the demo (its data is generated once,
    deterministically)."""
    return tmp_path_factory.mktemp("demo_cache")
