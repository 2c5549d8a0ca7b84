"""tools/distill_cost.py: every option timed on the same trainer and batch, the table and JSON; bad input."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import TINY_GEMNET, build_perturbed, write_checkpoint

REPO = Path(__file__).parents[2]
TOOL = REPO / "tools" / "distill_cost.py"


def test_every_option_is_timed_against_the_config(tmp_path, emt_lmdb):
    import fairchem_prune.models.gemnet_oc_reduced  # noqa: F401  (registers gemnet_oc)

    model = {**TINY_GEMNET, "name": "gemnet_oc", "num_blocks": 4}
    write_checkpoint(tmp_path / "teacher.pt", build_perturbed(model), model)
    out = tmp_path / "cost.json"
    args = [sys.executable, str(TOOL), "--config", str(REPO / "configs" / "s2ef" / "distill_2b.yml"), "--repeats", "2",
            "--threads", "1", "--out", str(out), "--", f"--task.distill.teacher_checkpoint={tmp_path / 'teacher.pt'}",
            f"--dataset.train.src={emt_lmdb['train']}", f"--dataset.val.src={emt_lmdb['val']}", "--optim.batch_size=4"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["option"] for r in rows] == ["config", "rattle", "teacher MD (5 steps)", "Jacobian (1 row)", "per-atom energies"]
    assert all(r["error"] is None and r["step_s"] > 0 for r in rows) and rows[0]["relative"] == 1.0
    # teacher MD runs 5 extra teacher passes per step, the Jacobian row extra backward passes: both cost more
    assert rows[2]["relative"] > 1.3 and rows[3]["relative"] > 1.3
    assert "| teacher MD (5 steps) |" in result.stdout
    # fairchem's config dump goes to the log, not the console
    assert "teacher_checkpoint" not in result.stdout + result.stderr and "teacher_checkpoint" in out.with_suffix(".log").read_text()
    again = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith(f"error: output {out} already exists")
