"""tools/convert_jmp.py and ``fairchem-prune convert-jmp``: what they print and write, and one clear
error line (exit status 2, nothing written) for each kind of bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairchem_prune.cli import main

TOOL = Path(__file__).parents[2] / "tools" / "convert_jmp.py"
JMP_CHECKPOINT = Path(__file__).parents[1] / "fixtures" / "jmp" / "jmp_tiny.pt"


def convert(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True)


def test_script_converts_and_prints_what_it_found(tmp_path):
    out = tmp_path / "jmp.pt"
    result = convert("--checkpoint", JMP_CHECKPOINT, "--output", out)
    assert result.returncode == 0, result.stderr[-2000:]
    for expected in ("3 interaction blocks, atom 16 / edge 24, direct forces, qint_tags [1, 2]",
                     "JMP 104,304 = backbone 90,192 + 4 heads (oc20, oc22, ani1x, transition1x) of 3,528",
                     "EMA as JMP's fine-tuning loads them", "oc20: 5-layer MLP; normalizers energy std 24.9 eV",
                     "cutoff 12 Å, max neighbours 30/20/8/1000", "not converted edge_dropout 0.1",
                     f"written       {out}  (gemnet_oc_reduced, 93,761 parameters)"):
        assert expected in result.stdout, (expected, result.stdout)
    assert torch.load(out, weights_only=False)["fairchem_prune"]["jmp_task"] == "oc20"


def test_fairchem_prune_command_converts_too(tmp_path, capsys):
    assert main(["convert-jmp", "--checkpoint", str(JMP_CHECKPOINT), "--output", str(tmp_path / "b.pt"),
                 "--task", "none", "--weights", "raw"]) == 0
    assert "fresh 5-layer MLP (--task none), no normalizers" in capsys.readouterr().out


def without_ema(tmp_path):
    checkpoint = torch.load(JMP_CHECKPOINT, weights_only=False)
    checkpoint["optimizer_states"] = []
    torch.save(checkpoint, tmp_path / "no_ema.pt")
    return tmp_path / "no_ema.pt"


def not_jmp(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 1}, tmp_path / "other.pt")
    return tmp_path / "other.pt"


def fairchem_checkpoint(tmp_path):
    out = tmp_path / "converted.pt"
    assert convert("--checkpoint", JMP_CHECKPOINT, "--output", out).returncode == 0
    return out


def truncated(tmp_path):
    (tmp_path / "cut.pt").write_bytes(JMP_CHECKPOINT.read_bytes()[:200_000])
    return tmp_path / "cut.pt"


@pytest.mark.parametrize("make, extra, message", [
    (not_jmp, [], "is not a JMP checkpoint (no hyper_parameters['backbone'] and backbone.* weights)"),
    (fairchem_checkpoint, [], "is already a fairchem checkpoint (model 'gemnet_oc_reduced'); it needs no conversion"),
    (truncated, [], "cannot be read ("),
    (lambda tmp: JMP_CHECKPOINT, ["--task", "oc21"], "--task 'oc21' is not a JMP pre-training task; choose one of "
                                                     "oc20, oc22, ani1x, transition1x, none"),
    (lambda tmp: JMP_CHECKPOINT, ["--weights", "swa"], "--weights must be one of ema, raw, ema-all, got 'swa'"),
    (without_ema, [], "has no EMA weights (optimizer_states[0]['ema'] is missing); convert its stored weights with --weights raw"),
    (lambda tmp: tmp / "missing.pt", [], "missing.pt: no such file"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, make, extra, message):
    source = make(tmp_path)
    before = sorted(tmp_path.iterdir())
    result = convert("--checkpoint", source, "--output", tmp_path / "out.pt", *extra)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert sorted(tmp_path.iterdir()) == before


def test_existing_output_is_kept_without_force(tmp_path):
    out = tmp_path / "out.pt"
    out.write_bytes(b"precious")
    result = convert("--checkpoint", JMP_CHECKPOINT, "--output", out)
    assert result.returncode == 2 and result.stderr.strip() == \
        f"error: output {out} already exists; choose another path or pass --force to overwrite it"
    assert out.read_bytes() == b"precious"
    assert convert("--checkpoint", JMP_CHECKPOINT, "--output", out, "--force").returncode == 0
    assert torch.load(out, weights_only=False)["config"]["model"]["name"] == "gemnet_oc_reduced"
