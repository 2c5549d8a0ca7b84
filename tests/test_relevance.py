"""GradCAM block relevance: properties of the scores and of the gradient they use."""

import json
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
def setup(tmp_path_factory, emt_lmdb):
    from conftest import build_stock, tiny_config, write_checkpoint

    path = tmp_path_factory.mktemp("rel") / "model.pt"
    config = {"name": "gemnet_oc", **tiny_config(num_blocks=3)}
    write_checkpoint(path, build_stock(config, seed=4), config)
    return path, LmdbDataset({"src": str(emt_lmdb["train"])})


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


def test_gradient_matches_finite_differences(setup):
    path, dataset = setup
    trainer = load_trainer(path)
    trainer.loss_functions = summed_task_loss(trainer.config)
    batch = data_list_collater([dataset[i] for i in range(2)], otf_graph=True)
    model = trainer.model

    def loss_with(shift=None):
        handle = None
        if shift is not None:
            handle = model.out_mlp_E.register_forward_pre_hook(lambda m, args: (args[0] + shift,))
        try:
            with torch.enable_grad():
                return trainer._compute_loss(trainer._forward(batch.clone()), batch)
        finally:
            if handle:
                handle.remove()

    with block_taps(model) as taps, torch.enable_grad():
        loss = loss_with()
        tap = taps()["energy"]
        (grad,) = torch.autograd.grad(loss, tap.tensors)
    f = tap.tensors[0]
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(6):
        i, j = int(rng.integers(f.shape[0])), int(rng.integers(f.shape[1]))
        eps = 1e-2
        delta = torch.zeros_like(f)
        delta[i, j] = eps
        fd = (loss_with(delta) - loss_with(-delta)).item() / (2 * eps)
        assert fd == pytest.approx(grad[i, j].item(), rel=0.05, abs=2e-3)
        checked += abs(grad[i, j].item()) > 1e-2
    assert checked >= 2  # the comparison was not only between zeros


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
