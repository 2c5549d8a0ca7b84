"""fairchem_prune.benchmark: FLOP counts against an independent hand count, parameters, the
reduced-vs-stock comparison and the result's layout. No timed assertions (speed is a benchmark
figure, not a test)."""

from __future__ import annotations

import inspect

import pytest
import torch
from conftest import tiny_config

from fairchem_prune import benchmark
from fairchem_prune.errors import PruneError
from fairchem_prune.params import count_config_parameters

BLOCKS = [5, 3, 1]


@pytest.fixture(scope="module")
def result(tiny_gemnet_files):
    config, data = tiny_gemnet_files
    torch.set_num_threads(1)
    return benchmark.run_benchmark(
        config, data, BLOCKS, batch_size=2, num_batches=2, repeats=1, warmup=0, finetune_repeats=1,
        forces="direct", progress=False, remeasure=0,
    )


# ---------------------------------------------------------------------------------------------------------
# an independent hand count of the dense work of GemNet-OC


def _bound(module, args, kwargs):
    return inspect.signature(module.forward).bind(*args, **kwargs).arguments


def hand_count(model: torch.nn.Module, batches) -> dict:
    """FLOPs (2 per multiply-add) of one no-grad pass, counted from the shapes each layer sees:

    * every ``torch.nn.Linear`` call: 2 x rows x in x out;
    * ``BasisEmbedding`` (rad_basis @ W, then for the non-efficient path rad_W1 @ sph):
      2 x edges x W.numel(), + 2 x triplets x interm x num_spherical;
    * ``EfficientInteractionBilinear`` (sph @ m_padded, then rad_W1 @ sph_m; its own ``bilinear``
      Dense is a Linear and counted above): 2 x sph.numel() x emb_in + 2 x rad_W1.numel() x emb_in.
    """
    from fairchem.core.models.gemnet_oc.layers.efficient import BasisEmbedding, EfficientInteractionBilinear

    counts = {"linear": 0, "basis": 0, "bilinear": 0}

    def linear(module, args, output):
        rows = args[0].numel() // module.in_features
        counts["linear"] += 2 * rows * module.in_features * module.out_features

    def basis(module, args, kwargs, output):
        a = _bound(module, args, kwargs)
        counts["basis"] += 2 * a["rad_basis"].shape[0] * module.weight.numel()
        if a.get("sph_basis") is not None and a.get("idx_sph_inner") is None:
            sph = a["sph_basis"]
            counts["basis"] += 2 * sph.shape[0] * sph.shape[-1] * (module.weight.shape[-1])

    def bilinear(module, args, kwargs, output):
        a = _bound(module, args, kwargs)
        rad_w1, sph = a["basis"]
        emb_in = a["m"].shape[-1]
        counts["bilinear"] += 2 * sph.numel() * emb_in + 2 * rad_w1.numel() * emb_in

    handles = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_hook(linear))
        elif isinstance(module, BasisEmbedding):
            handles.append(module.register_forward_hook(basis, with_kwargs=True))
        elif isinstance(module, EfficientInteractionBilinear):
            handles.append(module.register_forward_hook(bilinear, with_kwargs=True))
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return counts


def linear_flops_by_flop_counter(model, batches) -> int:
    """What FlopCounterMode attributes to the nn.Linear modules (its per-module breakdown)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        for batch in batches:
            model(batch)
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    names = {f"{root}.{name}" for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sum(sum(per_module.get(name, {}).values()) for name in names)


@pytest.mark.parametrize("kept", [5, 2])
def test_flop_count_matches_a_hand_count_of_the_dense_layers(tiny_gemnet_files, kept):
    _, data = tiny_gemnet_files
    architecture = {"name": "gemnet_oc", **tiny_config(), "regress_forces": True, "direct_forces": True}
    model, _ = benchmark.build_models(architecture, kept, "cpu")
    batches, _ = benchmark.load_batches(data, 2, 2, "cpu")

    counted = benchmark.count_flops(model, batches)
    hand = hand_count(model, batches)
    total_hand = sum(hand.values())
    # the bilinear/basis terms are a real share of a small GemNet-OC: a Linear-only count would be far off
    assert hand["basis"] + hand["bilinear"] > 0.1 * total_hand
    assert counted["total"] == pytest.approx(total_hand, rel=0.05)
    # the dense-layer part on its own: FlopCounterMode's per-module attribution to the Linear layers
    assert linear_flops_by_flop_counter(model, batches) == pytest.approx(hand["linear"], rel=0.05)
    assert set(counted["by_op"]) <= {"mm", "addmm", "bmm", "baddbmm"} and counted["by_op"]["mm"] > 0


# ---------------------------------------------------------------------------------------------------------
# the benchmark's result


def test_parameters_per_block_count_equal_the_config_counts(result):
    architecture = {**tiny_config(), "regress_forces": True, "direct_forces": True}
    for row in result["rows"]:
        k = row["blocks"]
        expected = count_config_parameters({"name": "gemnet_oc_reduced", **architecture, "num_blocks_kept": k})
        assert row["params"] == row["reduced"]["params"] == expected
        assert row["stock"]["params"] == count_config_parameters({"name": "gemnet_oc", **architecture, "num_blocks": k})
    assert result["rows"][0]["params_pct"] == 100.0
    assert [r["params_pct"] for r in result["rows"]] == sorted((r["params_pct"] for r in result["rows"]), reverse=True)


def test_flops_fall_with_blocks_and_reduced_equals_stock(result):
    rows = result["rows"]
    assert [r["blocks"] for r in rows] == BLOCKS
    gflops = [r["gflops_per_sample"] for r in rows]
    assert all(a > b for a, b in zip(gflops, gflops[1:])), gflops
    for row in rows:
        assert row["reduced"]["flops"] == row["stock"]["flops"]  # exactly: same graph, same layers
        assert row["reduced"]["flops_by_op"] == row["stock"]["flops_by_op"]
        assert row["max_abs_diff_vs_stock"] == 0.0  # same weights, same outputs
        assert row["flop_bound_speedup"] == pytest.approx(rows[0]["reduced"]["flops"] / row["reduced"]["flops"])
    assert rows[0]["flop_bound_speedup"] == 1.0 and rows[-1]["flop_bound_speedup"] > 2.0  # 1 block of 5
    # every block costs the same: FLOPs are affine in k
    steps = [a["reduced"]["flops"] - b["reduced"]["flops"] for a, b in zip(rows, rows[1:])]
    assert max(steps) == pytest.approx(min(steps), rel=0.01)


DOCUMENTED_ROW_KEYS = {
    "blocks", "params", "params_pct", "gflops_per_sample", "flop_bound_speedup", "samples_per_s",
    "measured_speedup", "measured_over_bound", "reduced_over_stock", "peak_memory_mb", "finetune_step_s",
    "finetune_step_times_s", "finetune_speedup", "max_abs_diff_vs_stock", "reduced", "stock", "flags", "spread",
}
DOCUMENTED_MODEL_KEYS = {
    "params", "flops", "gflops_per_sample", "flops_by_op", "memory", "pass_times_s", "median_pass_s", "min_pass_s",
    "samples_per_s", "spread", "flags",
}


def test_result_has_the_documented_keys(result):
    assert set(result) == {"environment", "settings", "reference_blocks", "rows", "timing", "notes"}
    assert result["timing"]["remeasure"] == 0 and len(result["timing"]["attempts"]) == 1
    assert {"torch", "fairchem_core", "device", "device_name", "threads", "dtype", "OMP_NUM_THREADS"} <= set(result["environment"])
    assert result["environment"]["threads"] == 1
    assert {"config", "data", "blocks", "batch_size", "num_batches", "samples", "device", "dtype", "repeats",
            "warmup", "finetune_repeats", "forces", "regress_forces", "direct_forces", "architecture"} <= set(result["settings"])
    assert result["settings"]["samples"] == 4 and result["reference_blocks"] == 5
    for row in result["rows"]:
        assert set(row) == DOCUMENTED_ROW_KEYS
        for kind in ("reduced", "stock"):
            assert set(row[kind]) == DOCUMENTED_MODEL_KEYS
            assert len(row[kind]["pass_times_s"]) == 1 and row[kind]["samples_per_s"] > 0
            memory = row[kind]["memory"]
            assert memory["pass_peak_bytes"] > 0 and memory["peak_bytes"] == memory["model_bytes"] + memory["pass_peak_bytes"]
        assert len(row["finetune_step_times_s"]) == 1 and row["finetune_step_s"] > 0
    assert result["rows"][0]["measured_speedup"] == 1.0 and result["rows"][0]["finetune_speedup"] == 1.0
    table = benchmark.format_table(result)
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["blocks", "params"])
    assert "bound x" in lines[header] and "red/stock" in lines[header]
    assert [line.split()[0] for line in lines[header + 1:header + 1 + len(BLOCKS)]] == [str(k) for k in BLOCKS]
    flags = [f for row in result["rows"] for f in dict.fromkeys(row["flags"] + row["stock"]["flags"])]
    assert len(lines) == header + 1 + len(BLOCKS) + len(flags)  # a flag: line each (one pass: no spread to allow)


def test_peak_memory_grows_with_the_batch(tiny_gemnet_files):
    _, data = tiny_gemnet_files
    model, _ = benchmark.build_models({"name": "gemnet_oc", **tiny_config()}, 2, "cpu")
    small = benchmark.measure_peak_memory(model, benchmark.load_batches(data, 1, 1, "cpu")[0], "cpu", "float32")
    large = benchmark.measure_peak_memory(model, benchmark.load_batches(data, 8, 1, "cpu")[0], "cpu", "float32")
    assert small["model_bytes"] == benchmark.model_bytes(model) > 0
    assert large["pass_peak_bytes"] > 2 * small["pass_peak_bytes"] > 0


def test_fast_init_gives_he_scaled_weights_and_restores_orthogonal_init():
    original = torch.nn.init.orthogonal_
    model, _ = benchmark.build_models({"name": "gemnet_oc", **tiny_config()}, 2, "cpu")
    assert torch.nn.init.orthogonal_ is original
    weight = model.int_blocks[0].dense_ca.linear.weight
    assert weight.std().item() == pytest.approx(weight.shape[1] ** -0.5, rel=0.2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"blocks": [6]}, "out of range: the model has 5 interaction blocks"),
        ({"blocks": [0, 2]}, "out of range"),
        ({"blocks": [3, 3]}, "duplicates"),
        ({"blocks": []}, "--blocks is empty"),
        ({"config": "missing.yml"}, "config missing.yml: no such file"),
        ({"data": "missing.lmdb"}, "data missing.lmdb: no such LMDB file or folder"),
        ({"data": None}, "give --data"),
        ({"batch_size": 9}, "has 8 structures"),
        ({"repeats": 0}, "--repeats must be an integer >= 1"),
        ({"forces": "sideways"}, "forces must be one of"),
        ({"overrides": ["cutoff"]}, "expected key=value"),
    ],
)
def test_bad_input_is_one_line_prune_error(tiny_gemnet_files, kwargs, message):
    config, data = tiny_gemnet_files
    arguments = {"config_path": config, "data": data, "blocks": [2], "batch_size": 2, "repeats": 1, "warmup": 0,
                 "finetune_repeats": 0, "progress": False}
    if "config" in kwargs:
        arguments["config_path"] = kwargs.pop("config")
    arguments.update(kwargs)
    with pytest.raises(PruneError) as err:
        benchmark.run_benchmark(**arguments)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_override_changes_the_architecture(tiny_gemnet_files):
    config, _ = tiny_gemnet_files
    architecture = benchmark.load_architecture(config, "gradient", ["emb_size_atom=32", "max_neighbors=10"])
    assert architecture["emb_size_atom"] == 32 and architecture["max_neighbors"] == 10
    assert architecture["regress_forces"] is True and architecture["direct_forces"] is False
    assert architecture["num_blocks"] == 5 and architecture["name"] == "gemnet_oc"


def test_jmp_l_default_config_counts_as_the_readme_table():
    architecture = benchmark.load_architecture(benchmark.DEFAULT_CONFIG, "none")
    counts = [count_config_parameters({**architecture, "num_blocks": k}) for k in (6, 4)]
    assert [round(c / 1e6, 2) for c in counts] == [160.61, 107.94]


# ---------------------------------------------------------------------------------------------------------
# EquiformerV2: equiformer_v2_reduced against stock equiformer_v2 with num_layers k

EQV2_BLOCKS = [4, 2, 1]


@pytest.fixture(scope="module")
def eqv2_config(tmp_path_factory):
    import yaml
    from conftest import TINY_EQV2

    path = tmp_path_factory.mktemp("eqv2_bench") / "eqv2.yml"
    path.write_text(yaml.safe_dump({"model": {"name": "equiformer_v2", **TINY_EQV2}}))
    return path


@pytest.fixture(scope="module")
def eqv2_result(eqv2_config, tiny_gemnet_files):
    _, data = tiny_gemnet_files
    torch.set_num_threads(1)
    return benchmark.run_benchmark(
        eqv2_config, data, EQV2_BLOCKS, batch_size=2, num_batches=1, repeats=1, warmup=0, finetune_repeats=1,
        forces="direct", progress=False, remeasure=0,
    )


def test_equiformer_v2_reduced_equals_stock_at_each_block_count(eqv2_result):
    from conftest import TINY_EQV2

    settings, rows = eqv2_result["settings"], eqv2_result["rows"]
    assert settings["family"] == "EquiformerV2" and settings["direct_forces"] is True
    assert settings["architecture"]["num_layers"] == 4 and "direct_forces" not in settings["architecture"]
    assert [r["blocks"] for r in rows] == EQV2_BLOCKS
    for row in rows:
        k = row["blocks"]
        assert row["reduced"]["params"] == count_config_parameters({"name": "equiformer_v2_reduced", **TINY_EQV2, "num_blocks_kept": k})
        assert row["stock"]["params"] == count_config_parameters({"name": "equiformer_v2", **TINY_EQV2, "num_layers": k})
        assert row["reduced"]["params"] == row["stock"]["params"]
        assert row["reduced"]["flops"] == row["stock"]["flops"] and row["reduced"]["flops_by_op"] == row["stock"]["flops_by_op"]
        assert row["max_abs_diff_vs_stock"] == 0.0  # same weights and seed (edge frames), same outputs
        assert set(row) == DOCUMENTED_ROW_KEYS and row["finetune_step_s"] > 0
    flops = [r["reduced"]["flops"] for r in rows]
    assert all(a > b for a, b in zip(flops, flops[1:])), flops
    # every transformer block costs the same: FLOPs are affine in k
    per_block = [(a - b) / (ka - kb) for a, b, ka, kb in zip(flops, flops[1:], EQV2_BLOCKS, EQV2_BLOCKS[1:])]
    assert max(per_block) == pytest.approx(min(per_block), rel=0.01)
    assert benchmark.format_table(eqv2_result).startswith("EquiformerV2 block reduction benchmark")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"forces": "gradient"}, "--forces gradient: EquiformerV2 predicts forces directly; use --forces direct or none"),
        ({"blocks": [5]}, "out of range: the model has 4 transformer blocks (keep 1..4)"),
        ({"overrides": ["num_layers=0"]}, "model needs num_layers (the number of transformer blocks)"),
        ({"overrides": ["kept_blocks=[0, 2]"]}, "sets kept_blocks; give the source architecture (num_layers) instead"),
    ],
)
def test_equiformer_v2_bad_input_is_one_line_prune_error(eqv2_config, tiny_gemnet_files, kwargs, message):
    _, data = tiny_gemnet_files
    arguments = {"config_path": eqv2_config, "data": data, "blocks": [2], "batch_size": 2, "repeats": 1, "warmup": 0,
                 "finetune_repeats": 0, "forces": "direct", "progress": False, **kwargs}
    with pytest.raises(PruneError) as err:
        benchmark.run_benchmark(**arguments)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_equiformer_v2_force_modes():
    none = benchmark.load_architecture("configs/models/equiformer_v2_31m.yml", "none")
    direct = benchmark.load_architecture("configs/models/equiformer_v2_31m.yml", "direct")
    assert none["regress_forces"] is False and direct["regress_forces"] is True and "direct_forces" not in direct
    assert none["num_layers"] == 8 and none["name"] == "equiformer_v2"
