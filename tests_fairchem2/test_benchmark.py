"""``fairchem-prune benchmark`` beside fairchem-core 2.x on the tiny UMA fixture (6 blocks, 4 experts):
the result's rows and fields, FLOPs against independent counts, parameters against the sliced
checkpoints, one-line errors; and the shared plausibility flags. No timed assertions."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import FIXTURES, UMA_TINY

from fairchem_prune import bench_harness
from fairchem_prune.cli import tool_main
from fairchem_prune.errors import PruneError
from fairchem_prune.fairchem2 import benchmark
from fairchem_prune.fairchem2.checkpoints import hydra_model, load_model, read_inference_checkpoint
from fairchem_prune.fairchem2.slicing import count_parameters, reduced_checkpoint

BLOCKS = [6, 4, 2]
SYSTEMS = ["cu111_oh"]


@pytest.fixture(scope="module")
def result():
    return benchmark.run_benchmark(UMA_TINY, BLOCKS, systems=SYSTEMS, repeats=1, warmup=0, threads=1, progress=False,
                                   remeasure=0)


ROW_KEYS = {"blocks", "params", "params_pct", "mole", "merged", "max_abs_diff_merged_vs_mole", "merged_over_mole"}
MODE_KEYS = {
    "params", "flops", "gflops_per_structure", "flops_by_op", "memory", "pass_times_s", "median_pass_s", "min_pass_s",
    "spread", "structures_per_s", "atoms_per_s", "flop_bound_speedup", "measured_speedup", "measured_over_bound",
    "speedup_vs_full_mole", "peak_memory_mb", "flags",
}


def test_result_has_the_documented_rows_and_fields(result):
    assert set(result) == {"environment", "settings", "reference_blocks", "rows", "timing", "notes"}
    assert result["environment"]["threads"] == 1 and result["environment"]["fairchem_core"].startswith("2.")
    settings = result["settings"]
    assert settings["blocks"] == BLOCKS and settings["modes"] == ["mole", "merged"] and settings["weights"] == "EMA"
    assert settings["num_blocks"] == 6 and settings["num_experts"] == 4 and settings["source"] == "checkpoint"
    assert settings["systems"] == [{"name": "cu111_oh", "task": "oc20", "natoms": 14, "formula": "HCu12O",
                                    "description": benchmark.SYSTEMS["cu111_oh"][2]}]
    assert settings["outputs"] == ["energy", "forces", "stress"] and settings["direct_forces"] is False
    assert settings["inference_settings"]["merged"]["merge_mole"] is True
    assert settings["inference_settings"]["mole"]["merge_mole"] is False
    assert result["reference_blocks"] == 6 and [r["blocks"] for r in result["rows"]] == BLOCKS
    for row in result["rows"]:
        assert set(row) == ROW_KEYS
        for mode in benchmark.MODES:
            entry = row[mode]
            assert set(entry) == MODE_KEYS
            assert len(entry["pass_times_s"]) == 1 and entry["spread"] == 0.0 and entry["structures_per_s"] > 0
            assert entry["atoms_per_s"] == pytest.approx(14 * entry["structures_per_s"])
            memory = entry["memory"]
            assert memory["pass_peak_bytes"] > 0 and memory["peak_bytes"] == memory["model_bytes"] + memory["pass_peak_bytes"]
            assert isinstance(entry["flags"], list)
        # fairchem's merge gives the same predictions
        assert row["max_abs_diff_merged_vs_mole"]["energy"] < 1e-4 and row["max_abs_diff_merged_vs_mole"]["forces"] < 1e-5
    first = result["rows"][0]
    assert first["mole"]["measured_speedup"] == first["mole"]["flop_bound_speedup"] == 1.0
    assert first["mole"]["speedup_vs_full_mole"] == 1.0 and first["params_pct"] == 100.0
    json.dumps(result)  # JSON-ready

    table = benchmark.format_table(result).splitlines()
    assert table[0].startswith("eSCN-MD (UMA / eSEN) block reduction benchmark:") and "1 torch threads" in table[1]
    header = 3 if table[2].startswith(bench_harness.FLAG_LEGEND) else 2  # the legend where a figure is flagged
    assert table[header].split()[:6] == ["blocks", "experts", "params", "params%", "GFLOP/str", "bound"]
    rows = [line.split() for line in table[header + 1:header + 1 + 2 * len(BLOCKS)]]
    assert [(r[0], r[1]) for r in rows] == [(str(k), mode) for mode in ("MoLE", "merged") for k in BLOCKS]
    assert rows[0][2] == "482.3k" and rows[1][2] == "327.8k" and rows[0][5] == "1.000"
    assert float(rows[2][5]) == pytest.approx(result["rows"][2]["mole"]["flop_bound_speedup"], abs=1e-3)


def test_parameters_equal_those_of_the_sliced_checkpoints(result):
    params = {row["blocks"]: row["params"] for row in result["rows"]}
    assert params[6] == 482_325 and params[4] == 327_765  # the fixture README's counts
    checkpoint = read_inference_checkpoint(UMA_TINY)
    reduced = reduced_checkpoint(checkpoint, [0, 1], [0, 1], UMA_TINY)
    assert params[2] == count_parameters(load_model(reduced, UMA_TINY, use_ema=True))
    first4 = FIXTURES / "uma_tiny_first4.pt"  # the hand-made 4-block checkpoint
    assert params[4] == count_parameters(load_model(read_inference_checkpoint(first4), first4))
    for row in result["rows"]:
        assert row["mole"]["params"] == row["params"] and row["merged"]["params"] < row["params"] / 2


def test_flops_are_affine_in_the_number_of_blocks(result):
    for mode in benchmark.MODES:
        flops = {row["blocks"]: row[mode]["flops"] for row in result["rows"]}
        per_block = (flops[6] - flops[4]) // 2
        assert per_block > 0 and flops[6] - flops[4] == flops[4] - flops[2] == 2 * per_block  # exactly
        assert set(result["rows"][0][mode]["flops_by_op"]) <= {"mm", "addmm", "bmm", "baddbmm"}
        for row in result["rows"]:
            assert row[mode]["flop_bound_speedup"] == pytest.approx(flops[6] / flops[row["blocks"]])


def expert_mixing_flops(model) -> int:
    """FLOPs the MoLE model spends and the merged one does not, per system, from the module shapes: each
    MoLE layer mixes its experts' weights (``einsum("eoi,be->boi")``: 2 x experts x out x in per system)
    and the routing MLP maps the system's embedding to expert coefficients (2 x in x out per Linear)."""
    mixing = sum(2 * m.weights.numel() for m in model.modules() if hasattr(m, "global_mole_tensors") and hasattr(m, "weights"))
    routing = sum(2 * m.in_features * m.out_features for m in model.backbone.routing_mlp.modules()
                  if isinstance(m, torch.nn.Linear))
    return mixing + routing


def test_mole_minus_merged_flops_is_the_expert_mixing(result):
    checkpoint = read_inference_checkpoint(UMA_TINY)
    for row in result["rows"]:
        k = row["blocks"]
        model = hydra_model(load_model(reduced_checkpoint(checkpoint, list(range(k)), list(range(k)), UMA_TINY), UMA_TINY))
        assert row["mole"]["flops"] - row["merged"]["flops"] == len(SYSTEMS) * expert_mixing_flops(model)


# ---------------------------------------------------------------------------------------------------------
# the command


def test_command_writes_json_and_prints_the_table(tmp_path, capfd):
    out = tmp_path / "bench.json"
    argv = ["--checkpoint", str(UMA_TINY), "--blocks", "6,3", "--systems", "si_bulk", "--experts", "merged",
            "--repeats", "2", "--warmup", "0", "--threads", "1", "--out", str(out)]
    assert tool_main("benchmark", argv) == 0
    captured = capfd.readouterr()  # the file descriptors: C libraries' lines too
    assert "USDT" not in captured.err  # torch's profiler, in the peak-memory pass
    printed = captured.out.splitlines()
    assert printed[-1] == f"written {out}"
    header = next(i for i, line in enumerate(printed) if line.split()[:2] == ["blocks", "experts"])
    assert [line.split()[:2] for line in printed[header + 1:header + 3]] == [["6", "merged"], ["3", "merged"]]
    saved = json.loads(out.read_text())
    assert saved["settings"]["modes"] == ["merged"] and set(saved["rows"][0]) == {"blocks", "params", "params_pct", "merged"}
    assert saved["settings"]["systems"][0]["task"] == "omat" and len(saved["rows"][1]["merged"]["pass_times_s"]) == 2


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit) as done:
        tool_main("benchmark", ["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in ("--config", "--checkpoint", "--blocks", "--systems", "--experts", "--repeats", "--out", "--force"):
        assert option in text


@pytest.fixture
def one_x_checkpoint(tmp_path):
    path = tmp_path / "gemnet.pt"
    torch.save({"config": {"model": {"name": "gemnet_oc"}}, "state_dict": {}}, path)
    return path


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("too many blocks", ["--blocks", "8,4"], "--blocks [8] out of range: the model has 6 eSCN-MD blocks (keep 1..6)"),
        ("duplicates", ["--blocks", "4,4"], "has duplicates"),
        ("not a list", ["--blocks", "six"], "expected comma-separated block counts"),
        ("missing checkpoint", ["--checkpoint", "{tmp}/missing.pt"], "missing.pt: no such file"),
        ("missing config", ["--config", "{tmp}/missing.yaml"], "model config {tmp}/missing.yaml: no such file"),
        ("1.x checkpoint", ["--checkpoint", "{tmp}/gemnet.pt"], "is a fairchem 1.x checkpoint"),
        ("not a model config", ["--config", "{tmp}/other.yaml"], "is not a fairchem 2 HydraModel config"),
        ("unknown system", ["--systems", "moon_rock"], "unknown system 'moon_rock'"),
        ("bad experts", ["--experts", "all"], "--experts must name mole and/or merged"),
        ("no repeats", ["--repeats", "0"], "--repeats must be an integer >= 1"),
        ("output exists", ["--out", "{tmp}/existing.json"], "already exists; choose another path or pass --force"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, one_x_checkpoint, case, args, message):
    (tmp_path / "existing.json").write_text("precious")
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"trainer": "ocp"}))
    options = {"--checkpoint": str(UMA_TINY), "--blocks": "4", "--systems": "cu111_oh", "--repeats": "1", "--warmup": "0",
               "--out": str(tmp_path / "out.json"), **dict(zip(args[::2], args[1::2]))}
    if "--config" in options:
        del options["--checkpoint"]
    argv = [part for flag, value in options.items() for part in (flag, value.format(tmp=tmp_path))]
    assert tool_main("benchmark", argv) == 2, case
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message.format(tmp=tmp_path) in err[0], err
    assert (tmp_path / "existing.json").read_text() == "precious" and not (tmp_path / "out.json").exists()


def test_a_task_the_model_lacks_is_one_line(tmp_path):
    config = benchmark.read_model_config(benchmark.Source(benchmark.DEFAULT_MODEL).path, "uma_m")
    config["backbone"]["dataset_list"] = ["omol"]
    path = tmp_path / "omol_only.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(PruneError, match="system cu111_oh is a oc20 system; config .* knows the tasks omol"):
        benchmark.run_benchmark(path, [2], systems=["cu111_oh"], progress=False)


def test_the_shipped_uma_configs_have_the_released_shapes():
    for name, layers, lmax, basis in (("uma_m", 10, 4, 128), ("uma_s", 4, 2, 64)):
        source = benchmark.Source(f"configs/fairchem2/models/{name}.yaml")
        backbone = source.model_config["backbone"]
        assert source.num_blocks == layers and source.num_experts == 32 and source.kind == "config"
        assert (backbone["lmax"], backbone["mmax"], backbone["sphere_channels"], backbone["num_distance_basis"]) == (lmax, 2, 128, basis)
        assert backbone["cutoff"] == 6.0 and backbone["max_neighbors"] == 300 and backbone["direct_forces"] is False
        assert source.model_config["model_id"] == "UMA-1.1"  # fairchem's compat fix-up from model_version 1.1
        assert benchmark.default_blocks(layers) == ([10, 8, 6, 4] if layers == 10 else [4, 2])


# ---------------------------------------------------------------------------------------------------------
# the shared plausibility flags


def _entry(blocks, median, spread, bound):
    return {"blocks": blocks, "median_pass_s": median, "spread": spread, "flop_bound_speedup": bound}


def test_plausibility_flags():
    fine = [_entry(6, 1.0, 0.02, 1.0), _entry(4, 0.8, 0.02, 1.4), _entry(2, 0.6, 0.02, 2.5)]
    assert bench_harness.plausibility_flags(fine) == [[], [], []]
    # 2.0x measured against a 1.4x bound, spreads 4 % in all
    above = bench_harness.plausibility_flags([_entry(6, 1.0, 0.02, 1.0), _entry(4, 0.5, 0.02, 1.4)])
    assert above[0] == [] and len(above[1]) == 1 and "above the FLOP bound 1.400" in above[1][0]
    # within the spread (and the spread itself allowed): not flagged
    assert bench_harness.plausibility_flags([_entry(6, 1.0, 0.2, 1.0), _entry(4, 0.65, 0.2, 1.4)], spread_limit=0.5) == [[], []]
    # a smaller model slower than a larger one beyond the spread
    slower = bench_harness.plausibility_flags([_entry(6, 1.0, 0.01, 1.0), _entry(4, 0.8, 0.01, 1.4), _entry(2, 0.9, 0.01, 2.5)])
    assert slower[2] == ["slower than the 4-block model (0.9 s vs 0.8 s per pass, beyond the spread 2.0 %)"]
    assert bench_harness.relative_spread([1.0, 1.2, 1.1]) == pytest.approx(0.2 / 1.1)
    assert bench_harness.relative_spread([1.0]) == 0.0
