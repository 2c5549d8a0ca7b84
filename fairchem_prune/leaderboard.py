"""Scoring checkpoints as the OCP leaderboards (OC20, OC22) score them, and their submission files.

Each (checkpoint, split) is predicted by the stock ``fairchem --mode predict`` (fairchem's ``OCPTrainer``,
the trainer it uses for S2EF and IS2RE) from a config written beside its output: the checkpoint's own
config with the split as its test set. fairchem writes what the evaluation server takes: per structure
``ids`` (``sid_fid``, or ``sid``), ``energy`` and, for S2EF, the free atoms' ``forces`` with their
``chunk_idx``. Metrics are fairchem's ``Evaluator`` with its task's default metric set applied to those
files against the split's targets, the free atoms only (as the server scores them); a submission is the
test splits' files joined by fairchem's own ``scripts/make_submission_file.py``.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from fairchem_prune.errors import PruneError

#: the splits of each leaderboard's submission file, as fairchem's make_submission_file.py names them
SUBMISSION_SPLITS = {"OC20": ("id", "ood_ads", "ood_cat", "ood_both"), "OC22": ("id", "ood")}
#: the columns of each task's table: (Evaluator metric, header, scale to the header's unit, digits); the
#: leaderboard's own columns first (S2EF ranks by EFwT, IS2RE by energy MAE), then the rest of the default set
COLUMNS = {
    "s2ef": [("energy_mae", "energy MAE (meV)", 1e3, 1), ("forces_mae", "force MAE (meV/Å)", 1e3, 1),
             ("forces_cosine_similarity", "force cos", 1, 4), ("energy_forces_within_threshold", "EFwT (%)", 100, 2),
             ("forcesx_mae", "Fx MAE (meV/Å)", 1e3, 1), ("forcesy_mae", "Fy MAE (meV/Å)", 1e3, 1),
             ("forcesz_mae", "Fz MAE (meV/Å)", 1e3, 1), ("forces_magnitude_error", "|F| error (meV/Å)", 1e3, 1)],
    "is2re": [("energy_mae", "energy MAE (eV)", 1, 4), ("energy_within_threshold", "EwT (%)", 100, 2),
              ("energy_mse", "energy MSE (eV²)", 1, 4)],
}
#: fairchem's name of each target in the data, then the names older OCP LMDBs use (OC20 S2EF: ``y``,
#: ``force``; IS2RE: ``y_relaxed``), read when the checkpoint's config maps no other name onto it
TARGET_NAMES = {"s2ef": {"energy": ("energy", "y"), "forces": ("forces", "force")},
                "is2re": {"energy": ("energy", "y_relaxed")}}


def submission_split(name: str, dataset: str) -> str:
    """The make_submission_file.py split of a split name (``id`` or ``test_id``, ``ood_ads``, ...);
    PruneError for a name the leaderboard has no split of."""
    split = name.removeprefix("test_")
    if split not in SUBMISSION_SPLITS[dataset]:
        raise PruneError(f"--split {name}: {dataset} submissions have the splits {', '.join(SUBMISSION_SPLITS[dataset])} "
                         "(test_ prefix optional)")
    return split


def predict_config(checkpoint: dict, path: Path, lmdb: Path, dtype: str, batch_size: int) -> dict:
    """The ``--mode predict`` config of the checkpoint ``checkpoint`` (read from ``path``) on the LMDB
    ``lmdb``: its model (graphs built on the fly, as the LMDBs hold none), outputs, task and data
    settings (key mapping, transforms), with ``lmdb`` as the only data set; predictions saved in
    ``dtype``."""
    from fairchem_prune.checkpoints import checkpoint_model_config

    config = checkpoint["config"]
    data = {k: v for k, v in copy.deepcopy(_data_settings(checkpoint)).items() if k != "src"}
    model = checkpoint_model_config(checkpoint, path)
    model["otf_graph"] = True
    return {
        "trainer": "ocp",
        "model": model,
        "outputs": copy.deepcopy(config["outputs"]),
        "loss_functions": copy.deepcopy(config.get("loss_functions", [])),
        "evaluation_metrics": copy.deepcopy(config.get("evaluation_metrics", {})),
        "task": {**copy.deepcopy(config.get("task") or {}), "prediction_dtype": dtype},
        # fairchem builds an optimizer and its schedule before predicting; neither ever steps
        "optim": {"lr_initial": 1e-4, **copy.deepcopy(config.get("optim") or {}), "scheduler": "Null",
                  "batch_size": batch_size, "eval_batch_size": batch_size, "num_workers": 0},
        "dataset": {"train": data, "test": {"src": str(lmdb.resolve()), "format": data.get("format", "lmdb")}},
        "logger": "tensorboard",
        "amp": False,
        "hide_eval_progressbar": True,
    }


def predict(checkpoint: Path, stored: dict, lmdb: Path, folder: Path, name: str, dtype: str = "float32",
            batch_size: int = 16, device: str = "cpu") -> Path:
    """``folder/name.npz``: fairchem's ``--mode predict`` predictions of ``checkpoint`` (read:
    ``stored``) on ``lmdb``,
    made once: a file whose config ``folder/name.yml`` is the one it would be made with now (same
    settings, checkpoint and LMDB of the same size and time) is kept. Its command line and output are
    in ``folder/name.log``."""
    from fairchem_prune.datasets.lmdb_io import lmdb_files
    from fairchem_prune.fairchem_runs import FAIRCHEM

    folder.mkdir(parents=True, exist_ok=True)
    out, config, log = folder / f"{name}.npz", folder / f"{name}.yml", folder / f"{name}.log"
    text = (f"# fairchem-prune evaluate: {_stamp(checkpoint)} on {', '.join(map(_stamp, lmdb_files(lmdb, '--split')))}\n"
            + yaml.safe_dump(predict_config(stored, checkpoint, lmdb, dtype, batch_size), sort_keys=False))
    if out.exists() and config.exists() and config.read_text() == text:
        return out
    out.unlink(missing_ok=True)
    config.write_text(text)
    run_dir = folder / "runs"
    command = [*FAIRCHEM, "--mode", "predict", "--config-yml", str(config.resolve()), "--checkpoint",
               str(checkpoint.resolve()), "--run-dir", str(run_dir.resolve()), "--timestamp-id", name,
               "--identifier", name, *(["--cpu"] if device == "cpu" else [])]
    with open(log, "w") as sink:
        sink.write(" ".join(command) + "\n")
        sink.flush()
        status = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT).returncode
    written = run_dir / "results" / name / "ocp_predictions.npz"
    if status or not written.exists():
        errors = [line.removeprefix("[rank0]: ").strip() for line in log.read_text().splitlines() if "Error" in line[:60]]
        raise PruneError(f"fairchem --mode predict failed on {checkpoint} and {lmdb} (exit status {status}"
                         f"{': ' + errors[-1][:300] if errors else ''}); see {log}")
    os.replace(written, out)
    return out


def _stamp(file: Path) -> str:
    """``file`` with its size and modification time: what tells a changed input from an unchanged one."""
    stat = file.resolve().stat()
    return f"{file.resolve()} ({stat.st_size} bytes, modified {stat.st_mtime_ns})"


def read_targets(lmdb: Path, task: str, key_mapping: dict | None = None, name: str = "") -> dict[str, dict]:
    """``{id: {"energy": float, "forces": (n_free, 3) array, "free": n_free}}`` of the structures of
    ``lmdb`` (ids as fairchem's predictions name them: ``sid_fid``, or ``sid``), forces of the free
    atoms only; each target read under the names ``key_mapping`` (a checkpoint's ``dataset.key_mapping``)
    maps onto it, else :data:`TARGET_NAMES`; ``name``: the split's, for messages. PruneError for a split
    without the task's targets (a test split) or with two structures of one id (fairchem's predictions
    keep one of them)."""
    from fairchem_prune.datasets.lmdb_io import open_lmdb_dataset

    names = {target: [*(k for k, v in (key_mapping or {}).items() if v == target), *options]
             for target, options in TARGET_NAMES[task].items()}
    label = f"split {name} ({lmdb})" if name else f"split {lmdb}"
    dataset = open_lmdb_dataset(lmdb)
    targets: dict[str, dict] = {}
    for index in range(len(dataset)):
        data = dataset[index]
        sid = data.sid.item() if torch.is_tensor(data.sid) else data.sid
        key = f"{sid}_{int(data.fid)}" if "fid" in data else f"{sid}"
        if key in targets:
            raise PruneError(f"{label}: two structures have the id {key} (sid_fid); fairchem's predictions keep one "
                             "per id, so give every structure its own sid (and fid)")
        entry = {}
        for target, options in names.items():
            found = next((n for n in options if n in data and getattr(data, n) is not None), None)
            if found is None:
                raise PruneError(f"{label} has no {target} targets ({' or '.join(options)}): it cannot be scored; "
                                 "a test split is for --submission")
            entry[target] = getattr(data, found)
        free = (data.fixed == 0) if "fixed" in data else torch.ones(int(data.natoms), dtype=torch.bool)
        record = {"energy": float(torch.as_tensor(entry["energy"]).reshape(-1)[0]), "free": int(free.sum())}
        if "forces" in entry:
            record["forces"] = entry["forces"].reshape(-1, 3)[free].double().numpy()
        targets[key] = record
    return targets


def score(predictions: Path, targets: dict[str, dict], task: str) -> dict[str, float]:
    """fairchem's ``Evaluator(task)`` with its default metrics on the predictions file (as ``--mode
    predict`` writes it) against ``targets`` (:func:`read_targets`); eV, eV/Å, fractions."""
    from fairchem.core.modules.evaluator import Evaluator

    written = np.load(predictions)
    ids = [str(i) for i in written["ids"]]
    if sorted(ids) != sorted(targets):
        raise PruneError(f"predictions {predictions} name other structures than the split's "
                         f"({len(ids)} predicted, {len(targets)} in the split)")
    prediction = {"energy": torch.as_tensor(written["energy"], dtype=torch.float64).reshape(-1)}
    target = {"energy": torch.tensor([targets[i]["energy"] for i in ids], dtype=torch.float64),
              "natoms": torch.tensor([targets[i]["free"] for i in ids])}
    if task == "s2ef":
        prediction["forces"] = torch.as_tensor(written["forces"], dtype=torch.float64)
        target["forces"] = torch.as_tensor(np.concatenate([targets[i]["forces"] for i in ids]))
    prediction["natoms"] = target["natoms"]
    metrics = Evaluator(task=task).eval(prediction, target)
    return {name: float(value["metric"]) for name, value in metrics.items()}


def describe(checkpoint: Path, stored: dict) -> dict:
    """``{"blocks", "parameters"}`` of the model of ``checkpoint`` (read: ``stored``); None for an
    architecture fairchem-prune does not know."""
    from fairchem_prune.checkpoints import load_source
    from fairchem_prune.params import count_parameters

    try:
        source = load_source(checkpoint, stored)
    except PruneError:
        return {"blocks": None, "parameters": None}
    return {"blocks": source.num_blocks, "parameters": count_parameters(source.model)}


def evaluate(models: dict[str, Path], splits: dict[str, Path], task: str, out: Path, dtype: str = "float32",
             batch_size: int = 16, device: str = "cpu") -> dict:
    """``{"task", "prediction_dtype", "models": {model: {"checkpoint", "blocks", "parameters"}}, "splits":
    {split: lmdb}, "metrics": {model: {split: {metric: value}, "mean": {...}}}}``: every model scored on
    every split (:func:`predict`, :func:`score`; predictions in ``out/predictions/<model>/<split>.npz``),
    ``mean`` over the splits as the leaderboard averages them. Every split's targets are read first, so a
    split that cannot be scored stops the command before any prediction."""
    from fairchem_prune.checkpoints import read_checkpoint
    from fairchem_prune.console import progress

    mapping = {}
    for path in models.values():
        mapping.update(_data_settings(read_checkpoint(path)).get("key_mapping") or {})
    targets = {split: read_targets(lmdb, task, mapping, split) for split, lmdb in splits.items()}
    metrics: dict[str, dict] = {}
    about: dict[str, dict] = {}
    with progress(total=len(models) * len(splits), desc="evaluate: fairchem --mode predict", unit="run") as bar:
        for model, checkpoint in models.items():
            stored = read_checkpoint(checkpoint)  # once per model, one in memory at a time (JMP-L: 160M parameters)
            about[model] = {"checkpoint": str(checkpoint), **describe(checkpoint, stored)}
            metrics[model] = {}
            for split, lmdb in splits.items():
                npz = predict(checkpoint, stored, lmdb, out / "predictions" / model, split, dtype, batch_size, device)
                metrics[model][split] = score(npz, targets[split], task)
                bar.update()
            metrics[model]["mean"] = {key: float(np.mean([metrics[model][s][key] for s in splits]))
                                      for key in metrics[model][next(iter(splits))]}
    return {"task": task, "prediction_dtype": dtype, "models": about,
            "splits": {s: str(p) for s, p in splits.items()}, "metrics": metrics}


def _data_settings(checkpoint: dict) -> dict:
    """The checkpoint's training-data settings (``format``, ``key_mapping``, ``transforms``, ``src``):
    its ``dataset`` as fairchem saves it, or that of a raw config (``train:`` or a list)."""
    data = checkpoint["config"].get("dataset") or {}
    return data.get("train", data) if isinstance(data, dict) else data[0]


def table(result: dict) -> str:
    """Markdown: a row per model and split (and the mean over the splits, when there are several), the
    task's columns in the leaderboard's units."""
    columns = COLUMNS[result["task"]]
    splits = list(result["splits"]) + (["mean"] if len(result["splits"]) > 1 else [])
    lines = ["| model | blocks | parameters | split | " + " | ".join(header for _, header, _, _ in columns) + " |",
             "|---|---:|---:|---|" + "---:|" * len(columns)]
    for model, by_split in result["metrics"].items():
        about = result["models"][model]
        size = [str(about["blocks"] or "-"), f"{about['parameters']:,}" if about["parameters"] else "-"]
        for split in splits:
            cells = [f"{scale * by_split[split][key]:.{digits}f}" for key, _, scale, digits in columns]
            lines.append(f"| {model} | " + " | ".join(size) + f" | {'**mean**' if split == 'mean' else split} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """The leaderboard's ranking metrics per model, a bar per split: force MAE and EFwT (S2EF), energy
    MAE and EwT (IS2RE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [COLUMNS[result["task"]][i] for i in ((1, 3) if result["task"] == "s2ef" else (0, 1))]
    models, splits = list(result["metrics"]), list(result["splits"])
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.2 * len(models) * max(1, len(splits)) / 2 + 3), 3.6))
    width = 0.8 / len(splits)
    for ax, (key, header, scale, digits) in zip(axes, shown):
        values = [[scale * result["metrics"][model][split][key] for model in models] for split in splits]
        for i, split in enumerate(splits):
            bars = ax.bar([m + (i - (len(splits) - 1) / 2) * width for m in range(len(models))], values[i], width, label=split)
            ax.bar_label(bars, fmt=f"%.{min(digits, 1)}f", fontsize=6)
        ax.set_ylim(0, 1.15 * max(max(v) for v in values) or 1.0)  # all zero (EFwT of a weak model): 0 to 1
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
        ax.set(ylabel=header, title=header)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{result['task'].upper()}: fairchem's Evaluator on fairchem --mode predict", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def submission(checkpoint: Path, splits: dict[str, Path], dataset: str, out: Path, predictions: Path,
               dtype: str = "float16", batch_size: int = 16, device: str = "cpu") -> Path:
    """The evaluation server's file ``out`` (``.npz``) of ``checkpoint``'s predictions (in the folder
    ``predictions``) on the test ``splits`` (make_submission_file.py's split name -> LMDB), joined by
    fairchem's own ``make_submission_file.py`` with its checks."""
    missing = [s for s in SUBMISSION_SPLITS[dataset] if s not in splits]
    if missing:
        raise PruneError(f"an {dataset} submission needs the splits {', '.join(SUBMISSION_SPLITS[dataset])}; "
                         f"missing: {', '.join(missing)} (give --split test_{missing[0]}=LMDB)")
    from fairchem_prune.checkpoints import read_checkpoint

    stored = read_checkpoint(checkpoint)
    files = {split: predict(checkpoint, stored, lmdb, predictions, split, dtype, batch_size, device)
             for split, lmdb in splits.items()}
    command = [sys.executable, "-m", "fairchem.core.scripts.make_submission_file", "--dataset", dataset, "--out-path", str(out)]
    for split, path in files.items():
        command += [f"--{split.replace('_', '-')}", str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode or not out.exists():
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise PruneError(f"fairchem's make_submission_file.py failed: {lines[-1] if lines else f'exit status {result.returncode}'}")
    return out
