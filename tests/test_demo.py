"""The README's main command, quick mode: every stage runs, writes its outputs, and is skipped on a re-run."""

import json

from fairchem_prune.demo import run_demo


def test_quick_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    rows = run_demo(out=tmp_path, quick=True)
    assert [row["blocks"] for row in rows] == [6, 5, 4, 3, 2]
    params = [row["parameters"] for row in rows]
    assert params == sorted(params, reverse=True) and params[-1] < 0.5 * params[0]
    assert all(row["forces_mae"] > 0 and row["energy_mae"] > 0 for row in rows)
    for name in ("teacher_6b.pt", "teacher_2b.pt", "block_reduction.json", "block_reduction.md",
                 "data/s2ef/train/data.lmdb", "logs/teacher.log"):
        assert (tmp_path / name).exists(), name
    first = capsys.readouterr().out
    assert "| 2 |" in first

    stamp = (tmp_path / "teacher_6b.pt").stat().st_mtime_ns
    assert run_demo(out=tmp_path, quick=True) == rows
    second = capsys.readouterr().out
    assert "data: found" in second and "teacher: found" in second and "evaluate: found" in second
    assert (tmp_path / "teacher_6b.pt").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "block_reduction.json").read_text()) == rows
