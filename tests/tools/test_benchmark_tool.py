"""tools/benchmark.py: end to end on a tiny GemNet-OC and a tiny LMDB; one clear error line for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fairchem_prune.bench_harness import FLAG_LEGEND
from fairchem_prune.cli import tool_main

TOOL = Path(__file__).parents[2] / "tools" / "benchmark.py"


def quick_benchmark(config, data, blocks: str, forces: str, out):
    """The tool at the smallest settings: 2 structures, one pass, one fine-tuning step, one thread."""
    return subprocess.run(
        [sys.executable, str(TOOL), "--config", str(config), "--data", str(data), "--blocks", blocks,
         "--batch-size", "2", "--repeats", "1", "--warmup", "0", "--finetune-repeats", "1", "--threads", "1",
         "--remeasure", "0", "--forces", forces, "--out", str(out)],
        capture_output=True, text=True,
    )


def test_script_runs_end_to_end_prints_the_table_and_writes_json(tiny_gemnet_files, tmp_path):
    config, data = tiny_gemnet_files
    out = tmp_path / "bench.json"
    result = quick_benchmark(config, data, "3,1", "gradient", out)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["blocks", "params", "params%"])
    assert "1 torch threads" in lines[1] and lines[header - 1] in (lines[1], FLAG_LEGEND)  # the legend if flagged
    rows = [line.split() for line in lines[header + 1:header + 3]]
    assert [r[0] for r in rows] == ["3", "1"]
    assert rows[0][2] == "100.0" and rows[0][4] == "1.000"  # the reference: 100 % parameters, bound 1.000
    assert float(rows[1][4]) > 1.5  # 1 block of 3: FLOP bound well above 1
    assert lines[-1] == f"written {out}"
    saved = json.loads(out.read_text())
    assert saved["settings"]["forces"] == "gradient" and saved["settings"]["direct_forces"] is False
    assert saved["environment"]["threads"] == 1
    assert [r["blocks"] for r in saved["rows"]] == [3, 1]
    assert saved["rows"][1]["gflops_per_sample"] == pytest.approx(float(rows[1][3]), abs=1e-3)


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("missing config", ["--config", "{tmp}/missing.yml"], "missing.yml: no such file"),
        ("missing data", ["--data", "{tmp}/missing.lmdb"], "missing.lmdb: no such LMDB file or folder"),
        ("no data", ["--data", None], "give --data"),
        ("corrupt data", ["--data", "{tmp}/corrupt.lmdb"], "cannot be read as a fairchem LMDB"),
        ("empty data folder", ["--data", "{tmp}/empty"], "empty: the folder exists but holds no .lmdb files; give an "
                                                          "LMDB file or a folder of *.lmdb files"),
        ("not a list", ["--blocks", "six,five"], "expected comma-separated block counts"),
        ("too many blocks", ["--blocks", "6,4"], "[6] out of range: the model has 5 interaction blocks"),
        ("duplicates", ["--blocks", "4,4"], "has duplicates"),
        ("other model", ["--config", "{tmp}/schnet.yml"], "holds a 'schnet' model"),
        ("output exists", ["--out", "{tmp}/existing.json"], "already exists; choose another path or pass --force"),
        ("too few structures", ["--batch-size", "5", "--num-batches", "2"], "has 8 structures"),
    ],
)
def test_bad_input_gives_one_clear_line(tiny_gemnet_files, tmp_path, capsys, case, args, message):
    config, data = tiny_gemnet_files
    (tmp_path / "corrupt.lmdb").write_bytes(b"not an lmdb" * 100)
    (tmp_path / "empty").mkdir()
    (tmp_path / "schnet.yml").write_text(yaml.safe_dump({"model": {"name": "schnet", "hidden_channels": 8}}))
    (tmp_path / "existing.json").write_text("precious")
    options = {"--config": str(config), "--data": str(data), "--blocks": "2", "--out": str(tmp_path / "out.json"),
               "--repeats": "1", "--warmup": "0", "--finetune-repeats": "0", **dict(zip(args[::2], args[1::2]))}
    argv = [part for flag, value in options.items() if value is not None for part in (flag, value.format(tmp=tmp_path))]
    assert tool_main("benchmark", argv) == 2, case
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert (tmp_path / "existing.json").read_text() == "precious" and not (tmp_path / "out.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_clear_line(tiny_gemnet_files, tmp_path, capsys):
    config, data = tiny_gemnet_files
    argv = ["--config", str(config), "--data", str(data), "--blocks", "2", "--device", "cuda", "--out", str(tmp_path / "o.json")]
    assert tool_main("benchmark", argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --device cuda: no CUDA device visible to torch; use --device cpu"


def test_fairchem_prune_has_the_benchmark_command():
    from fairchem_prune import hosts

    assert hosts.installed() == 1
    assert hosts.command_module("benchmark") == "fairchem_prune.commands.benchmark"


def test_equiformer_v2_config_runs_through_the_same_options(tiny_gemnet_files, tmp_path, capsys):
    from conftest import TINY_EQV2

    _, data = tiny_gemnet_files
    config = tmp_path / "eqv2.yml"
    config.write_text(yaml.safe_dump({"model": {"name": "equiformer_v2_reduced", **TINY_EQV2}}))
    out = tmp_path / "bench.json"
    argv = ["--config", str(config), "--data", str(data), "--blocks", "4,2", "--batch-size", "2", "--repeats", "1",
            "--warmup", "0", "--finetune-repeats", "1", "--threads", "1", "--forces", "direct", "--out", str(out)]
    assert tool_main("benchmark", argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("EquiformerV2 block reduction benchmark") and printed.splitlines()[-1] == f"written {out}"
    saved = json.loads(out.read_text())
    assert [r["blocks"] for r in saved["rows"]] == [4, 2] and saved["rows"][1]["flop_bound_speedup"] > 1.5
    assert saved["settings"]["regress_forces"] is True and saved["settings"]["direct_forces"] is True


def test_script_takes_a_converted_jmp_checkpoint(tiny_gemnet_files, tmp_path):
    from fairchem_prune.jmp import convert_jmp

    _, data = tiny_gemnet_files
    checkpoint = tmp_path / "jmp.pt"
    convert_jmp(Path(__file__).parents[1] / "fixtures" / "jmp" / "jmp_tiny.pt", checkpoint)
    out = tmp_path / "bench.json"
    result = quick_benchmark(checkpoint, data, "3,2", "direct", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("note: the stock gemnet_oc has no absolute_rbf_cutoff, cell_offset_convention, num_mlps, untagged_tag: it "
            "is built without them") in result.stdout
    saved = json.loads(out.read_text())
    architecture = saved["settings"]["architecture"]
    assert architecture["num_mlps"] == 5 and architecture["num_blocks"] == 3 and architecture["qint_tags"] == [1, 2]
    rows = {row["blocks"]: row for row in saved["rows"]}
    assert rows[3]["params"] == 93_761  # the converted model, JMP's 5-layer heads included
    assert rows[3]["max_abs_diff_vs_stock"] is None and rows[2]["params"] < rows[3]["params"]
