"""``fairchem-prune benchmark`` / ``tools/benchmark.py``."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = ("efficiency of block reduction: throughput, GFLOPs, parameters, peak memory and fine-tuning step "
               "time of the reduced model and of the stock fairchem model with as many blocks, at each block count, "
               "measured side by side")


def block_counts(text: str) -> list[int]:
    """Parse ``6,5,4`` into ``[6, 5, 4]`` (a bad list is a one-line PruneError, raised in ``run``)."""
    from fairchem_prune.bench_harness import parse_block_counts

    return parse_block_counts(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fairchem_prune.architectures import supported
    from fairchem_prune.bench_harness import REMEASURE
    from fairchem_prune.benchmark import DEFAULT_CONFIG

    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"fairchem YAML whose model: section is a stock or reduced model ({supported()}), or a "
                             "self-contained checkpoint (.pt, e.g. from tools/convert_jmp.py) whose config is one "
                             f"(default: {DEFAULT_CONFIG})")
    parser.add_argument("--data", metavar="LMDB", help="fairchem LMDB file or folder; the first structures are used, in order")
    parser.add_argument("--blocks", default="6,5,4,3,2", metavar="K,K,...",
                        help="block counts to compare (default: 6,5,4,3,2; the largest is the reference)")
    parser.add_argument("--batch-size", type=int, default=4, help="structures per batch (default: 4)")
    parser.add_argument("--num-batches", type=int, default=1,
                        help="batches per timed pass (default: 1); fine-tuning steps use the first batch")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16 runs under torch.autocast (meant for CUDA; on CPU only fast with native bf16)")
    parser.add_argument("--forces", choices=("none", "gradient", "direct", "config"), default="none",
                        help="none: energy only (regress_forces false, direct_forces false, as JMP fine-tunes QM9; "
                             "default); gradient: forces as -dE/dx (JMP's MD fine-tuning; models with a direct_forces switch); direct: the "
                             "direct-force branch; config: as the config says")
    parser.add_argument("--model-override", action="append", default=[], metavar="KEY=VALUE",
                        help="change a model hyperparameter (value parsed as YAML), e.g. max_neighbors=20; repeatable")
    parser.add_argument("--repeats", type=int, default=5, help="timed inference passes per model (median; default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (default 1)")
    parser.add_argument("--remeasure", type=int, default=REMEASURE,
                        help="while a timing is flagged (passes spread above 10 %%, a speed-up above the FLOP bound, "
                             "a model slower than a larger one), time every model again, at most this many times "
                             f"(default {REMEASURE}; 0: never)")
    parser.add_argument("--finetune-repeats", type=int, default=3,
                        help="timed fine-tuning steps per block count (median; default 3; 0 skips)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's, i.e. OMP_NUM_THREADS or all cores)")
    parser.add_argument("--init", choices=("fast", "fairchem"), default="fast",
                        help="weight init: fast (Gaussian instead of QR-orthogonal; speed does not depend on weights) "
                             "or fairchem's own (minutes for JMP-L on a CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--out", default="bench.json", help="JSON output (default: bench.json)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.benchmark import format_table, run_benchmark, write_result
    from fairchem_prune.errors import PruneError
    from fairchem_prune.files import refuse_existing

    refuse_existing(args.out, args.force)
    if not Path(args.out).resolve().parent.is_dir():
        raise PruneError(f"output {args.out}: folder {Path(args.out).parent} does not exist")
    result = run_benchmark(
        args.config, args.data, block_counts(args.blocks), batch_size=args.batch_size, device=args.device, dtype=args.dtype,
        repeats=args.repeats, warmup=args.warmup, finetune_repeats=args.finetune_repeats,
        num_batches=args.num_batches, forces=args.forces, overrides=args.model_override, threads=args.threads,
        init=args.init, seed=args.seed, remeasure=args.remeasure,
    )
    write_result(result, args.out)
    print(format_table(result))
    print(f"written {args.out}")
