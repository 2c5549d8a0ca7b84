"""``fairchem-prune benchmark`` beside fairchem-core 2.x."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = ("efficiency of block reduction of a fairchem 2 model (UMA, eSEN): parameters, FLOPs and the FLOP "
               "bound, throughput and measured speed-up, peak memory of the model keeping k blocks, with its "
               "mixture of linear experts and with the experts merged, measured side by side")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fairchem_prune.bench_harness import REMEASURE
    from fairchem_prune.fairchem2.benchmark import DEFAULT_MODEL, DEFAULT_SYSTEMS, MODES, SYSTEMS

    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="YAML",
                        help=f"fairchem 2 HydraModel config of an eSCN-MD model, built with random weights "
                             f"(default: {DEFAULT_MODEL}, the uma-m 1.1 shape: 10 blocks, 32 experts)")
    source.add_argument("--checkpoint", metavar="PT",
                        help="fairchem 2 inference checkpoint (MLIPInferenceCheckpoint: a path, or a model name in "
                             "fairchem's cache such as uma-s-1p1): each "
                             "block count is the checkpoint sliced to its first k blocks (EMA weights where present)")
    parser.add_argument("--blocks", metavar="K,K,...",
                        help="block counts to compare (default: b, b-2, b-4, b-6 of the model's b blocks, e.g. 10,8,6,4; "
                             "the largest is the reference)")
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), metavar="NAME,...",
                        help=f"built-in systems predicted in each pass, one per batch (default: {','.join(DEFAULT_SYSTEMS)}; "
                             + "; ".join(f"{name}: {desc} ({task})" for name, (_, task, desc) in SYSTEMS.items()) + ")")
    parser.add_argument("--experts", default=",".join(MODES), metavar="MODE,...",
                        help="mole (the experts as trained), merged (fairchem's merge_mole for each system), or both "
                             "(default: mole,merged)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per model (median; default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (default 1)")
    parser.add_argument("--remeasure", type=int, default=REMEASURE,
                        help="while a timing is flagged (passes spread above 10 %%, a speed-up above the FLOP bound, "
                             "a model slower than a larger one), time every model again, at most this many times "
                             f"(default {REMEASURE}; 0: never)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's, i.e. OMP_NUM_THREADS or all cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights of --config")
    parser.add_argument("--out", default="bench.json", help="JSON output (default: bench.json)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.bench_harness import parse_block_counts
    from fairchem_prune.errors import PruneError
    from fairchem_prune.fairchem2.benchmark import DEFAULT_MODEL, format_table, run_benchmark, write_result
    from fairchem_prune.files import refuse_existing

    refuse_existing(args.out, args.force)
    if not Path(args.out).resolve().parent.is_dir():
        raise PruneError(f"output {args.out}: folder {Path(args.out).parent} does not exist")
    from fairchem_prune.fairchem2.checkpoints import resolve_path

    result = run_benchmark(
        str(resolve_path(args.checkpoint)) if args.checkpoint else args.config or DEFAULT_MODEL,
        None if args.blocks is None else parse_block_counts(args.blocks), systems=_names(args.systems),
        modes=_names(args.experts), repeats=args.repeats, warmup=args.warmup, device=args.device,
        threads=args.threads, seed=args.seed, remeasure=args.remeasure,
    )
    write_result(result, args.out)
    print(format_table(result))
    print(f"written {args.out}")
