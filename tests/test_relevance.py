"""GradCAM block relevance: properties of the scores and of the gradient they use (GemNet-OC, EquiformerV2)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fairchem.core.datasets import LmdbDataset, data_list_collater

from fairchem_prune.evaluation import load_trainer
from fairchem_prune.relevance import (
    block_taps, relevance_of_samples, scores_from_raw, summed_task_loss,
)

TOOL = Path(__file__).parents[1] / "tools" / "block_relevance.py"


@pytest.fixture(scope="module")
def train_set(emt_lmdb):
    """The EMT training slabs (one LMDB environment per process: lmdb refuses a second)."""
    return LmdbDataset({"src": str(emt_lmdb["train"])})


@pytest.fixture(scope="module")
def setup(tmp_path_factory, train_set):
    from conftest import build_stock, tiny_config, write_checkpoint

    path = tmp_path_factory.mktemp("rel") / "model.pt"
    config = {"name": "gemnet_oc", **tiny_config(num_blocks=3)}
    write_checkpoint(path, build_stock(config, seed=4), config)
    return path, train_set


def scores(trainer, dataset, indices, batch_size):
    return scores_from_raw(relevance_of_samples(trainer, dataset, indices, batch_size))


def test_scores_are_a_distribution_independent_of_batching_and_order(setup):
    path, dataset = setup
    trainer = load_trainer(path)
    indices = list(range(8))
    base = scores(trainer, dataset, indices, batch_size=2)
    for branch in ("energy", "forces", "combined"):
        assert len(base[branch]) == 4  # embedding + 3 blocks
        assert min(base[branch]) >= 0 and sum(base[branch]) == pytest.approx(1.0, abs=1e-12)
    assert max(base["energy"]) < 0.9  # not degenerate on this model
    doubled = scores(trainer, dataset, indices, batch_size=4)
    shuffled = scores(trainer, dataset, [5, 2, 7, 0, 3, 6, 1, 4], batch_size=2)
    for other in (doubled, shuffled):
        for branch in ("energy", "forces"):
            np.testing.assert_allclose(other[branch], base[branch], rtol=1e-5)
            np.testing.assert_allclose(other["raw"][branch], base["raw"][branch], rtol=1e-5)


def test_a_block_whose_output_is_zero_gets_exactly_zero(setup):
    path, dataset = setup
    trainer = load_trainer(path)
    zero = lambda module, args, output: tuple(torch.zeros_like(x) for x in output)  # noqa: E731
    handle = trainer.model.out_blocks[2].register_forward_hook(zero)  # partition f_3
    result = scores(trainer, dataset, list(range(4)), batch_size=2)
    handle.remove()
    assert result["energy"][2] == 0.0 and result["forces"][2] == 0.0
    assert all(s > 0 for i, s in enumerate(result["energy"]) if i != 2)


def test_a_loss_that_reads_one_block_gives_it_all_relevance(setup):
    path, dataset = setup
    trainer = load_trainer(path)
    with torch.no_grad():
        for mlp, width in ((trainer.model.out_mlp_E, 16), (trainer.model.out_mlp_F, 24)):
            weight = mlp[0].linear.weight
            keep = weight[:, 1 * width:2 * width].clone()  # partition f_2 (block 0)
            weight.zero_()
            weight[:, 1 * width:2 * width] = keep
    result = scores(trainer, dataset, list(range(4)), batch_size=2)
    assert result["energy"] == [0.0, 1.0, 0.0, 0.0]
    assert result["forces"] == [0.0, 1.0, 0.0, 0.0]


def assert_gradient_matches_finite_differences(path, dataset, shifted, eps: float) -> None:
    """The gradient dL/df that GradCAM uses, f the first tapped tensor of the checkpoint's model, against
    central differences of the summed task loss at 6 random entries of f. ``shifted(model, shift)``
    registers a hook adding ``shift`` to f and returns its handle. Every loss is evaluated from the same
    random seed (EquiformerV2's edge frames)."""
    trainer = load_trainer(path)
    trainer.loss_functions = summed_task_loss(trainer.config)
    batch = data_list_collater([dataset[i] for i in range(2)], otf_graph=True)
    model = trainer.model

    def loss_with(shift=None):
        handle = shifted(model, shift) if shift is not None else None
        try:
            torch.manual_seed(0)
            with torch.enable_grad():
                return trainer._compute_loss(trainer._forward(batch.clone()), batch)
        finally:
            if handle:
                handle.remove()

    with block_taps(model) as taps, torch.enable_grad():
        loss = loss_with()
        f = taps()["energy"].tensors[0]
        (grad,) = torch.autograd.grad(loss, [f])
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(6):
        index = tuple(int(rng.integers(n)) for n in f.shape)
        delta = torch.zeros_like(f)
        delta[index] = eps
        fd = (loss_with(delta) - loss_with(-delta)).item() / (2 * eps)
        assert fd == pytest.approx(grad[index].item(), rel=0.05, abs=2e-3)
        checked += abs(grad[index].item()) > 1e-2
    assert checked >= 2  # the comparison was not only between zeros


def test_gradient_matches_finite_differences(setup):
    path, dataset = setup
    assert_gradient_matches_finite_differences(
        path, dataset, lambda model, shift: model.out_mlp_E.register_forward_pre_hook(lambda m, args: (args[0] + shift,)),
        eps=1e-2,
    )


def test_tool_writes_the_documented_json_and_a_plot(setup, emt_lmdb, tmp_path):
    path, _ = setup
    out, plot = tmp_path / "relevance.json", tmp_path / "relevance.png"
    result = subprocess.run(
        [sys.executable, str(TOOL), "--checkpoint", str(path), "--data", str(emt_lmdb["train"]),
         "--data", str(emt_lmdb["val"]), "--num-samples", "4", "--batch-size", "2", "--out", str(out), "--plot", str(plot)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data) == {"blocks", "datasets"} and data["blocks"] == ["f_1", "f_2", "f_3", "f_4"]
    assert set(data["datasets"]) == {"train", "val"}
    for entry in data["datasets"].values():
        assert set(entry) == {"energy", "forces", "combined", "raw", "num_samples"}
        assert set(entry["raw"]) == {"energy", "forces"} and entry["num_samples"] == 4
        assert sum(entry["combined"]) == pytest.approx(1.0)
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
    assert "f_1" in result.stdout  # the table is printed


def test_tool_rejects_bad_input_with_one_line(setup, tmp_path):
    path, _ = setup
    result = subprocess.run(
        [sys.executable, str(TOOL), "--checkpoint", str(path), "--data", str(tmp_path / "missing")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: data {tmp_path / 'missing'}: no such LMDB file or folder"


def test_a_corrupt_lmdb_is_one_line_and_nothing_after_it(setup, tmp_path):
    """fairchem's LmdbDataset, when its constructor fails, prints a traceback of its own once collected
    ('LmdbDataset' object has no attribute 'env'); the file is checked before fairchem opens it."""
    path, _ = setup
    (tmp_path / "corrupt.lmdb").write_bytes(b"not an lmdb" * 100)
    result = subprocess.run(
        [sys.executable, str(TOOL), "--checkpoint", str(path), "--data", str(tmp_path / "corrupt.lmdb")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: data {tmp_path / 'corrupt.lmdb'} cannot be read as a fairchem LMDB (") and "MDB_INVALID" in last
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


# ---------------------------------------------------------------------------------------------------------
# EquiformerV2: GradCAM on the transformer blocks' outputs


@pytest.fixture(scope="module")
def eqv2_setup(tmp_path_factory, train_set):
    """(checkpoint, dataset) of a random 3-block EquiformerV2."""
    from conftest import TINY_EQV2, build_perturbed, write_checkpoint

    import fairchem_prune.models.equiformer_v2_reduced  # noqa: F401  (registers fairchem's equiformer_v2)

    path = tmp_path_factory.mktemp("rel_eqv2") / "eqv2.pt"
    config = {"name": "equiformer_v2", **TINY_EQV2, "num_layers": 3}
    write_checkpoint(path, build_perturbed(config, seed=4), config)
    return path, train_set


def test_equiformer_v2_scores_are_one_node_branch_over_the_blocks(eqv2_setup, one_thread):
    path, dataset = eqv2_setup
    trainer = load_trainer(path)
    base = scores(trainer, dataset, list(range(6)), batch_size=2)
    assert len(base["energy"]) == 3 and base["forces"] == [None] * 3 and base["combined"] == base["energy"]
    assert min(base["energy"]) > 0 and sum(base["energy"]) == pytest.approx(1.0, abs=1e-12)
    assert max(base["energy"]) < 0.9
    # batching changes the edge frames' random rolls, hence the scores at the model's equivariance error
    doubled = scores(trainer, dataset, list(range(6)), batch_size=3)
    np.testing.assert_allclose(doubled["energy"], base["energy"], rtol=1e-3)


def test_equiformer_v2_zeroed_block_output_cuts_the_relevance_of_the_blocks_before_it(eqv2_setup, one_thread):
    """Block 1's output zeroed: it gets no relevance, and neither does block 0, whose output reaches the
    loss only through block 1 (the residual stream); block 2 gets all of it."""
    path, dataset = eqv2_setup
    trainer = load_trainer(path)

    def zero(module, args, output):
        output.embedding = output.embedding * 0  # still in the graph

    handle = trainer.model.blocks[1].register_forward_hook(zero)
    result = scores(trainer, dataset, list(range(4)), batch_size=2)
    handle.remove()
    assert result["energy"] == [0.0, 0.0, 1.0]


def test_equiformer_v2_gradient_matches_finite_differences(eqv2_setup, one_thread):
    """dL/dx of block 0's output; the summed float32 loss is ~2e3 here, so the step is 0.1 (at 1e-2
    round-off dominates)."""
    path, dataset = eqv2_setup

    def shifted(model, shift):
        def add(module, args, output):
            output.embedding = output.embedding + shift

        return model.blocks[0].register_forward_hook(add)

    assert_gradient_matches_finite_differences(path, dataset, shifted, eps=0.1)


def test_tool_names_equiformer_v2_blocks_by_their_original_index(eqv2_setup, emt_lmdb, tmp_path):
    from fairchem_prune.slicing import slice_checkpoint

    path, _ = eqv2_setup
    sliced = tmp_path / "kept_0_2.pt"
    slice_checkpoint(path, sliced, kept_blocks=[0, 2])
    out = tmp_path / "relevance.json"
    result = subprocess.run(
        [sys.executable, str(TOOL), "--checkpoint", str(sliced), "--data", str(emt_lmdb["val"]), "--num-samples", "4",
         "--batch-size", "2", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["blocks"] == ["b_0", "b_2"]
    entry = data["datasets"]["val"]
    assert entry["forces"] == [None, None] and entry["raw"]["forces"] == [None, None]
    assert entry["combined"] == entry["energy"] and sum(entry["energy"]) == pytest.approx(1.0)
    assert "b_2" in result.stdout
