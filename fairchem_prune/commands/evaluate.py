"""``fairchem-prune evaluate`` / ``tools/evaluate.py``."""

from __future__ import annotations

import argparse

DESCRIPTION = ("score checkpoints as the OCP leaderboards do: fairchem --mode predict on each split and fairchem's "
               "Evaluator with the task's default metrics (S2EF: energy and force MAE, force cos, EFwT, ...; IS2RE: "
               "energy MAE, EwT), one table; or --submission: the evaluation server's file of the test splits")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", required=True, metavar="[NAME=]PATH",
                        help="a fairchem checkpoint to score (repeatable: teacher, BR, BR+KD side by side; "
                             "NAME defaults to the file's stem)")
    parser.add_argument("--split", action="append", required=True, metavar="NAME=LMDB",
                        help="a split: a fairchem LMDB file or folder (repeatable), e.g. val_id=s2ef/val_id; with "
                             "--submission the leaderboard's test splits (OC20: id, ood_ads, ood_cat, ood_both; "
                             "OC22: id, ood; a test_ prefix is allowed), which need no targets")
    parser.add_argument("--task", choices=("s2ef", "is2re"), default="s2ef",
                        help="the leaderboard task, i.e. Evaluator's metric set (default s2ef)")
    parser.add_argument("--submission", nargs="?", const="OC20", choices=("OC20", "OC22"),
                        help="write the submission file of each checkpoint (default OC20) instead of scoring")
    parser.add_argument("--prediction-dtype", choices=("float16", "float32"),
                        help="precision fairchem saves predictions in (default: float32 to score, fairchem's "
                             "float16 for a submission)")
    parser.add_argument("--batch-size", type=int, default=16, help="structures per batch (default 16)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", default="evaluate_out",
                        help="output folder: leaderboard.md/.json/.png or submission_<NAME>.npz, and predictions/ "
                             "(made once: a rerun reuses those of unchanged checkpoints and splits)")
    parser.add_argument("--force", action="store_true", help="overwrite the table or submission files of an earlier run")


def _named(specs: list[str], option: str, default_name) -> dict:
    from pathlib import Path

    from fairchem_prune.errors import PruneError

    named = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = default_name(spec), spec
        if not name or not path:
            raise PruneError(f"{option} {spec!r}: give NAME=PATH")
        if name in named:
            raise PruneError(f"{option}: the name {name!r} is given twice; name each one (NAME=PATH)")
        named[name] = Path(path)
    return named


def run(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from fairchem_prune import hosts, leaderboard
    from fairchem_prune.checkpoints import read_checkpoint
    from fairchem_prune.datasets.lmdb_io import lmdb_files
    from fairchem_prune.errors import PruneError, require_device
    from fairchem_prune.files import atomic_path, refuse_existing

    models = _named(args.checkpoint, "--checkpoint", lambda spec: Path(spec).stem)
    splits = _named(args.split, "--split", lambda spec: None)
    if args.batch_size < 1:
        raise PruneError(f"--batch-size must be at least 1, got {args.batch_size}")
    require_device(args.device)
    for path in models.values():
        hosts.require_host(path)
        if "outputs" not in read_checkpoint(path)["config"]:
            raise PruneError(f"checkpoint {path} has no 'outputs' in its config (an OCP trainer checkpoint of "
                             "fairchem 1.x has); fairchem --mode predict cannot run it")
    for name, path in splits.items():
        lmdb_files(path, f"--split {name}")
    out = Path(args.out)
    if args.submission:
        splits = {leaderboard.submission_split(name, args.submission): path for name, path in splits.items()}
        files = {model: out / f"submission_{model}.npz" for model in models}
        for file in files.values():
            refuse_existing(file, args.force)
        out.mkdir(parents=True, exist_ok=True)
        for model, checkpoint in models.items():
            print(f"{model}: fairchem --mode predict on {', '.join(splits)}, then make_submission_file.py")
            leaderboard.submission(checkpoint, splits, args.submission, files[model], out / "predictions" / model,
                                   args.prediction_dtype or "float16", args.batch_size, args.device)
            print(f"wrote {files[model]} ({args.submission} {args.task.upper()}, predictions in {out / 'predictions' / model})")
        return
    outputs = [out / f"leaderboard.{suffix}" for suffix in ("json", "md", "png")]
    for file in outputs:
        refuse_existing(file, args.force)
    out.mkdir(parents=True, exist_ok=True)
    result = leaderboard.evaluate(models, splits, args.task, out, args.prediction_dtype or "float32",
                                  args.batch_size, args.device)
    text = leaderboard.table(result)
    with atomic_path(outputs[0]) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    with atomic_path(outputs[1]) as tmp:
        tmp.write_text(f"# {args.task.upper()}: fairchem's Evaluator on fairchem --mode predict\n\n"
                       f"Predictions saved in {result['prediction_dtype']}; forces of the free atoms only, as the "
                       f"leaderboard scores them.\n\n{text}\n")
    leaderboard.plot(result, outputs[2])
    print(text)
    print(f"wrote {outputs[1]}, {outputs[0].name} and {outputs[2].name} (predictions and fairchem's logs in {out / 'predictions'})")
