"""tools/evaluate.py (``fairchem-prune evaluate``) on LMDBs in OC20's S2EF layout (EMT slabs with
adsorbates, fixed and free atoms, ``sid`` and ``fid``, targets as ``y`` / ``force``) and the shipped demo
teacher with its 4-block slice: the table equals fairchem's ``Evaluator`` applied by hand to the output of
a stock ``fairchem --mode predict``; the submission file has the layout fairchem's make_submission_file.py
documents; a split without targets, a missing submission split, two structures of one id and an existing
output are one line with exit status 2."""

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import fairchem
from fairchem.core.modules.evaluator import Evaluator
from oc20_s2ef import write_s2ef_split

from fairchem_prune.cli import tool_main
from fairchem_prune.datasets.lmdb_io import open_lmdb_dataset
from fairchem_prune.slicing import slice_checkpoint

TEACHER = Path(__file__).parents[2] / "fairchem_prune" / "demo" / "assets" / "teacher_6b.pt"


def evaluate(*args) -> tuple[int, str, str]:
    """The tool's entry point in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tool_main("evaluate", [str(a) for a in args], prog="evaluate.py")
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def oc20(tmp_path_factory):
    """Two scored splits (3 systems x 3 frames, 2 x 3), four test splits without targets (1 x 2 each),
    and the demo teacher's first 4 blocks."""
    root = tmp_path_factory.mktemp("oc20")
    splits = {"val_id": write_s2ef_split(root / "val_id.lmdb", 3, 3, seed=1),
              "val_ood_cat": write_s2ef_split(root / "val_ood_cat.lmdb", 2, 3, seed=2)}
    tests = {name: write_s2ef_split(root / f"test_{name}.lmdb", 1, 2, seed=10 + i, targets=False)
             for i, name in enumerate(("id", "ood_ads", "ood_cat", "ood_both"))}
    slice_checkpoint(TEACHER, root / "br_4b.pt", num_blocks_kept=4)
    return root, splits, tests


def by_hand(checkpoint: Path, lmdb: Path, run_dir: Path) -> dict[str, float]:
    """Evaluator("s2ef") on the file a stock ``fairchem --mode predict`` writes for a config made here
    from the checkpoint's own (predictions in float32), against the LMDB's ``y`` / ``force`` on its free
    atoms."""
    config = copy.deepcopy(torch.load(checkpoint, weights_only=False)["config"])
    train = {k: v for k, v in config["dataset"].items() if k != "src"}
    config["dataset"] = {"train": train, "test": {"src": str(lmdb), "format": "lmdb"}}
    config["task"] = {**config.get("task", {}), "prediction_dtype": "float32"}
    config["model"]["otf_graph"] = True
    config["logger"] = "tensorboard"
    for key in ("val_dataset", "test_dataset", "relax_dataset", "cmd", "slurm", "gpus"):
        config.pop(key, None)
    path = run_dir / "predict.yml"
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    fairchem("--mode", "predict", "--config-yml", path, "--checkpoint", checkpoint, "--run-dir", run_dir,
             "--timestamp-id", "hand", "--cpu", cwd=run_dir)
    written = np.load(run_dir / "results" / "hand" / "ocp_predictions.npz")
    entries = {}
    for data in open_lmdb_dataset(lmdb):
        entries[f"{data.sid}_{data.fid}"] = data
    ids = list(written["ids"])
    free = [entries[i].fixed == 0 for i in ids]
    target = {"energy": torch.tensor([entries[i].y for i in ids], dtype=torch.float64),
              "forces": torch.cat([entries[i].force[f] for i, f in zip(ids, free)]).double(),
              "natoms": torch.tensor([int(f.sum()) for f in free])}
    prediction = {"energy": torch.tensor(written["energy"], dtype=torch.float64).reshape(-1),
                  "forces": torch.tensor(written["forces"], dtype=torch.float64), "natoms": target["natoms"]}
    assert len(written["chunk_idx"]) == len(ids) - 1 and prediction["forces"].shape[0] == target["natoms"].sum()
    return {k: v["metric"] for k, v in Evaluator(task="s2ef").eval(prediction, target).items()}


def test_the_table_is_evaluator_on_fairchem_predict_output(oc20, tmp_path):
    root, splits, _ = oc20
    out = tmp_path / "out"
    code, stdout, stderr = evaluate("--checkpoint", f"teacher={TEACHER}", "--checkpoint", root / "br_4b.pt",
                                    *[f"--split={name}={path}" for name, path in splits.items()], "--out", out)
    assert code == 0, stderr
    result = json.loads((out / "leaderboard.json").read_text())
    assert list(result["metrics"]) == ["teacher", "br_4b"]
    assert result["models"]["teacher"]["blocks"] == 6 and result["models"]["br_4b"]["blocks"] == 4
    assert result["models"]["br_4b"]["parameters"] < result["models"]["teacher"]["parameters"]
    expected = set(Evaluator.task_metrics["s2ef"]["forces"]) - {"mae", "cosine_similarity", "magnitude_error"}
    expected |= {"energy_mae", "forces_mae", "forces_cosine_similarity", "forces_magnitude_error"}
    hand = by_hand(TEACHER, splits["val_id"], tmp_path / "hand")  # one split by hand: each fairchem run costs ~15 s
    assert set(hand) == expected == set(result["metrics"]["teacher"]["val_id"]) == set(result["metrics"]["br_4b"]["val_ood_cat"])
    for key, value in hand.items():
        assert result["metrics"]["teacher"]["val_id"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    for model in result["metrics"]:  # the leaderboard's mean over the splits
        assert result["metrics"][model]["mean"]["forces_mae"] == pytest.approx(
            np.mean([result["metrics"][model][s]["forces_mae"] for s in splits]))
    # the reduced model is worse on forces: the table tells the models apart
    assert result["metrics"]["br_4b"]["mean"]["forces_mae"] > result["metrics"]["teacher"]["mean"]["forces_mae"]
    table = (out / "leaderboard.md").read_text()
    assert "EFwT (%)" in table and "| teacher | 6 |" in table and "**mean**" in table
    assert f"{1000 * result['metrics']['br_4b']['val_id']['forces_mae']:.1f}" in table
    assert (out / "leaderboard.png").stat().st_size > 0

    # an existing table is kept; a re-run with --force reuses the predictions (same config and files)
    stamp = (out / "predictions" / "teacher" / "val_id.npz").stat().st_mtime_ns
    code, _, stderr = evaluate("--checkpoint", f"teacher={TEACHER}", "--split", f"val_id={splits['val_id']}", "--out", out)
    assert code == 2 and stderr.count("\n") == 1 and "already exists" in stderr
    code, _, _ = evaluate("--checkpoint", f"teacher={TEACHER}", "--split", f"val_id={splits['val_id']}", "--out", out, "--force")
    assert code == 0 and (out / "predictions" / "teacher" / "val_id.npz").stat().st_mtime_ns == stamp


def test_is2re_scores_the_relaxed_energy_with_evaluators_is2re_set(oc20, tmp_path):
    """An LMDB in OC20's IS2RE layout (the target ``y_relaxed``, no forces): energy MAE, MSE and EwT of
    fairchem's predictions against it, as Evaluator("is2re") gives them by hand."""
    from fairchem_prune.datasets.lmdb_io import write_lmdb

    root, splits, _ = oc20
    entries = list(open_lmdb_dataset(splits["val_ood_cat"]))
    for i, data in enumerate(entries):
        data.y_relaxed = data.y - 0.1 * i  # not the S2EF energy: scoring y instead would not match
        del data.y, data.force
    lmdb = tmp_path / "is2re.lmdb"
    write_lmdb(lmdb, entries)
    code, _, stderr = evaluate("--checkpoint", f"teacher={TEACHER}", "--split", f"val_id={lmdb}", "--task", "is2re",
                               "--out", tmp_path / "out")
    assert code == 0, stderr
    result = json.loads((tmp_path / "out" / "leaderboard.json").read_text())["metrics"]["teacher"]["val_id"]
    written = np.load(tmp_path / "out" / "predictions" / "teacher" / "val_id.npz")
    relaxed = {f"{d.sid}_{d.fid}": d.y_relaxed for d in entries}
    target = {"energy": torch.tensor([relaxed[i] for i in written["ids"]], dtype=torch.float64)}
    prediction = {"energy": torch.tensor(written["energy"], dtype=torch.float64).reshape(-1)}
    hand = {k: v["metric"] for k, v in Evaluator(task="is2re").eval(prediction, target).items()}
    assert set(result) == set(hand) == {"energy_mae", "energy_mse", "energy_within_threshold"}
    for key, value in hand.items():
        assert result[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key


def test_the_submission_file_has_the_layout_make_submission_file_documents(oc20, tmp_path):
    """OC22's two test splits (OC20's four take the same path, at ~15 s a prediction; its split check is
    in test_bad_input_is_one_line)."""
    root, _, oc20_tests = oc20
    tests = {"id": oc20_tests["id"], "ood": oc20_tests["ood_ads"]}
    out = tmp_path / "out"
    code, stdout, stderr = evaluate("--checkpoint", root / "br_4b.pt", "--submission", "OC22",
                                    *[f"--split=test_{name}={path}" for name, path in tests.items()], "--out", out)
    assert code == 0, stderr
    submission = np.load(out / "submission_br_4b.npz")
    assert set(submission.files) == {f"{split}_{key}" for split in tests for key in ("ids", "energy", "forces", "chunk_idx")}
    for split, lmdb in tests.items():
        entries = list(open_lmdb_dataset(lmdb))
        assert sorted(submission[f"{split}_ids"]) == sorted(f"{d.sid}_{d.fid}" for d in entries)
        free = [int((d.fixed == 0).sum()) for d in entries]
        assert submission[f"{split}_forces"].shape == (sum(free), 3) and submission[f"{split}_forces"].dtype == np.float16
        assert list(submission[f"{split}_chunk_idx"]) == list(np.cumsum(free)[:-1])
        assert submission[f"{split}_energy"].size == len(entries)
        written = np.load(out / "predictions" / "br_4b" / f"{split}.npz")
        assert np.array_equal(written["forces"], submission[f"{split}_forces"])


def test_bad_input_is_one_line(oc20, tmp_path):
    root, splits, tests = oc20
    cases = {
        "no energy targets": ["--checkpoint", TEACHER, "--split", f"test_id={tests['id']}"],
        "missing: ood_cat, ood_both": ["--checkpoint", TEACHER, "--submission", "--split", f"id={tests['id']}",
                                       "--split", f"ood_ads={tests['ood_ads']}"],
        "OC22 submissions have the splits": ["--checkpoint", TEACHER, "--submission", "OC22", "--split", f"ood_ads={tests['ood_ads']}"],
        "give NAME=PATH": ["--checkpoint", TEACHER, "--split", str(splits["val_id"])],
        "no such LMDB": ["--checkpoint", TEACHER, "--split", f"val=missing.lmdb"],
        "given twice": ["--checkpoint", TEACHER, "--checkpoint", TEACHER, "--split", f"val_id={splits['val_id']}"],
    }
    for expected, args in cases.items():
        code, stdout, stderr = evaluate(*args, "--out", tmp_path / "out")
        assert code == 2 and stderr.count("\n") == 1 and expected in stderr, (expected, stderr)
    assert not (tmp_path / "out" / "predictions").exists()  # refused before any prediction

    twice = tmp_path / "twice.lmdb"  # OC20's ids are sid_fid: two frames of one id would lose one prediction
    from fairchem_prune.datasets.lmdb_io import write_lmdb

    entry = open_lmdb_dataset(splits["val_id"])[0]
    write_lmdb(twice, [entry, entry])
    code, _, stderr = evaluate("--checkpoint", TEACHER, "--split", f"val={twice}", "--out", tmp_path / "out")
    assert code == 2 and "two structures have the id" in stderr
