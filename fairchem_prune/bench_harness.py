"""The host-independent half of the efficiency benchmarks (``fairchem-prune benchmark`` beside
fairchem-core 1.x, :mod:`fairchem_prune.benchmark`, and beside 2.x, :mod:`fairchem_prune.fairchem2.benchmark`).

Each host builds its models and inputs and hands this module zero-argument callables (one inference
pass of one model); everything measured about them is done here, the same way for both hosts:

* **timing**: :func:`time_round_robin`: ``warmup`` untimed rounds, then ``repeats`` timed rounds; in
  each round every model runs one pass, round-robin with a rotating start (:func:`round_robin`), so
  drift of the machine's load hits all models alike; the median pass time is reported with the
  spread of the timed passes (:func:`relative_spread`: (max - min) / median). On CUDA every pass ends
  with ``torch.cuda.synchronize()``;
* **FLOPs**: :func:`count_flops`: ``torch.utils.flop_counter.FlopCounterMode`` over one pass: the dense
  linear algebra aten ops (``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions, attention; einsum and
  ``@`` reach it as ``mm``/``bmm``) at 2 FLOPs per multiply-add, backward ops included when the pass
  differentiates; scatter/gather, indexing and elementwise work are not counted;
* **peak memory**: :func:`measure_peak_memory`: model bytes + the peak of tensor memory allocated
  during one pass above what was allocated before it (CUDA: ``torch.cuda.max_memory_allocated``; CPU:
  the allocation events of torch's profiler, i.e. live torch tensors only);
* **plausibility**: :func:`plausibility_flags`: a spread of the passes above :data:`SPREAD_LIMIT`
  (10 %), a measured speed-up above the FLOP bound by more than the run's own spread, or a model with
  fewer blocks slower than one with more beyond the spread; :func:`equal_work_flags`: two models of
  equal FLOPs further apart in speed than their spreads (and than 10 %). :func:`measure_until_plausible`
  measures every model again, side by side, while anything is flagged (at most :data:`REMEASURE`
  times); what is still flagged is reported flagged;
* the environment record (:func:`environment`), table cells and JSON writing.

Imports torch, the standard library, tqdm, :mod:`fairchem_prune.errors` and :mod:`fairchem_prune.console` only.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from fairchem_prune import console
from fairchem_prune.errors import PruneError

# ----------------------------------------------------------------------------------------------------------
# small helpers


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device: str, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def round_robin(names: Sequence, round_index: int) -> list:
    """``names`` rotated by ``round_index``: every model takes every position in turn."""
    shift = round_index % len(names)
    return list(names[shift:]) + list(names[:shift])


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median of repeated timings; 0 for fewer than two."""
    if len(values) < 2:
        return 0.0
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid else 0.0


def note(message: str) -> None:
    """One line on stderr that leaves a running progress bar intact."""
    tqdm.write(message, file=sys.stderr)


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers (each tensor once, even where shared)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def parse_block_counts(text: str) -> list[int]:
    """Parse ``6,5,4`` into ``[6, 5, 4]``; a bad list is a one-line PruneError."""
    try:
        return [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise PruneError(f"--blocks {text!r}: expected comma-separated block counts like 6,5,4,3,2") from None


def check_blocks(blocks: Sequence[int], num_blocks: int, kind: str = "interaction") -> list[int]:
    """Validated block counts, largest first (the largest is the reference)."""
    blocks = list(blocks)
    if not blocks:
        raise PruneError("--blocks is empty; give block counts like 6,5,4,3,2")
    if len(set(blocks)) != len(blocks):
        raise PruneError(f"--blocks {','.join(map(str, blocks))} has duplicates")
    bad = [k for k in blocks if not 1 <= k <= num_blocks]
    if bad:
        raise PruneError(f"--blocks {bad} out of range: the model has {num_blocks} {kind} blocks (keep 1..{num_blocks})")
    return sorted(blocks, reverse=True)


def check_counts(**values: tuple[int, int]) -> None:
    """PruneError unless every ``--name=(value, least)`` is an integer >= least (``repeats=(5, 1)``)."""
    for name, (value, least) in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise PruneError(f"--{name.replace('_', '-')} must be an integer >= {least}, got {value!r}")


# ----------------------------------------------------------------------------------------------------------
# the machine


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str, dtype: str, fairchem_core: str | None) -> dict:
    """Versions, device, threads, dtype and date of a run (``fairchem_core``: the host's version)."""
    info = {
        "torch": torch.__version__,
        "fairchem_core": fairchem_core,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "dtype": dtype,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if device == "cpu":
        info["cpu_bf16_native"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return info


# ----------------------------------------------------------------------------------------------------------
# measuring one pass


class GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: everything counts under "Global". The
    tracker's per-module attribution breaks on modules called re-entrantly (and is not needed here)."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def count_flops(run: Callable[[], object]) -> dict:
    """FLOPs of ``run()``: ``{"total": int, "by_op": {aten op: int}}``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = GlobalOnly()
    with counter:
        run()
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), "by_op": dict(sorted(by_op.items()))}


def cpu_peak_from_profiler(prof) -> int:
    """Peak of (allocated - freed) torch CPU tensor bytes over a profiled region, from the
    profiler's ``[memory]`` allocation events (bytes > 0 allocate, < 0 free) in time order."""
    from torch.autograd import DeviceType

    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def measure_peak_memory(run: Callable[[], object], device: str, own_bytes: int) -> dict:
    """Peak memory of ``run()``: ``{"pass_peak_bytes", "model_bytes", "peak_bytes", "method"}``
    (``own_bytes``: the model's, :func:`model_bytes`)."""
    if device == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        sync(device)
        extra, method = torch.cuda.max_memory_allocated() - before, "torch.cuda.max_memory_allocated"
    else:
        from torch.profiler import ProfilerActivity, profile

        # the profiler's own C-level lines (torch 2.13: "USDT ... profiler_start") leave the console
        with console.native_stderr_to_log("torch.profiler"), profile(activities=[ProfilerActivity.CPU],
                                                                     profile_memory=True) as prof:
            run()
        extra, method = cpu_peak_from_profiler(prof), "torch.profiler CPU allocation events"
    return {"pass_peak_bytes": int(extra), "model_bytes": int(own_bytes), "peak_bytes": int(own_bytes + extra),
            "method": method}


def timed(run: Callable[[], object], device: str) -> float:
    """Seconds of one ``run()`` (synchronised on CUDA)."""
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def time_round_robin(runs: Mapping[Hashable, Callable[[], object]], warmup: int, repeats: int, device: str,
                     desc: str = "timing", progress: bool = True) -> dict:
    """``{name: [seconds of each timed pass]}``: ``warmup`` untimed rounds, then ``repeats`` timed
    ones, every model once per round, the order rotated each round."""
    names = list(runs)
    times = {name: [] for name in names}
    rounds = warmup + repeats
    with console.progress(total=rounds * len(names), desc=desc, unit="pass", disable=not progress) as shown:
        for r in range(rounds):
            for name in round_robin(names, r):
                elapsed = timed(runs[name], device)
                if r >= warmup:
                    times[name].append(elapsed)
                shown.update()
    return times


# ----------------------------------------------------------------------------------------------------------
# plausibility

#: a model whose timed passes spread more than this ((max - min) / median) is flagged as unstable
SPREAD_LIMIT = 0.10
#: flagged timings are measured again (every model, side by side) at most this many times
REMEASURE = 2


def plausibility_flags(entries: Sequence[Mapping], spread_limit: float = SPREAD_LIMIT) -> list[list[str]]:
    """Physically implausible or unstable figures among one set of models of one family, one list of
    messages per entry (empty: fine). ``entries``: largest block count first (the reference), each with
    ``blocks``, ``median_pass_s``, ``spread`` (:func:`relative_spread` of its passes) and
    ``flop_bound_speedup`` (reference FLOPs / its FLOPs). Flagged:

    * a spread above ``spread_limit`` (the timing is unstable);
    * a measured speed-up (reference median / its median) above the FLOP bound by more than the
      spreads of the two models (the relative uncertainty of a ratio of medians);
    * a model slower than one with more blocks by more than the two models' spreads.
    """
    flags = [[] for _ in entries]
    if not entries:
        return flags
    ref = entries[0]
    for i, entry in enumerate(entries):
        if entry["spread"] > spread_limit:
            flags[i].append(f"unstable: its passes spread {100 * entry['spread']:.1f} % (above {100 * spread_limit:.0f} %)")
        measured = ratio(ref["median_pass_s"], entry["median_pass_s"])
        tolerance = entry["spread"] + ref["spread"]
        bound = entry.get("flop_bound_speedup")
        if i and measured is not None and bound and measured > bound * (1 + tolerance):
            flags[i].append(f"measured speed-up {measured:.3f} is above the FLOP bound {bound:.3f} by more than "
                            f"the spread ({100 * tolerance:.1f} %)")
        for larger in entries[:i]:
            if larger["blocks"] <= entry["blocks"]:
                continue
            tolerance = entry["spread"] + larger["spread"]
            if entry["median_pass_s"] > larger["median_pass_s"] * (1 + tolerance):
                flags[i].append(f"slower than the {larger['blocks']}-block model ({entry['median_pass_s']:.4g} s vs "
                                f"{larger['median_pass_s']:.4g} s per pass, beyond the spread {100 * tolerance:.1f} %)")
    return flags


def equal_work_flags(a: Mapping, b: Mapping, what: str, spread_limit: float = SPREAD_LIMIT) -> list[str]:
    """A flag when two models doing the same work (same FLOPs; ``a``, ``b``: ``median_pass_s`` and
    ``spread``) differ in speed by more than their spreads and more than ``spread_limit``: one of the
    two timings is wrong. ``what`` names the ratio (e.g. "reduced/stock")."""
    speed = ratio(b["median_pass_s"], a["median_pass_s"])  # a's throughput / b's
    tolerance = max(a["spread"] + b["spread"], spread_limit)
    if speed is None or 1 / (1 + tolerance) <= speed <= 1 + tolerance:
        return []
    return [f"{what} {speed:.3f} at equal FLOPs is further from 1 than the spread ({100 * tolerance:.1f} %)"]


def timing_stats(times: Mapping[Hashable, Sequence[float]]) -> dict:
    """``{name: {"median_pass_s", "spread"}}`` of :func:`time_round_robin`'s passes."""
    return {name: {"median_pass_s": median(values), "spread": relative_spread(values)} for name, values in times.items()}


def measure_until_plausible(measure: Callable[[int], dict], judge: Callable[[dict], dict],
                            remeasure: int = REMEASURE, label: Callable[[Hashable], str] = str,
                            say: Callable[[str], None] = note) -> tuple[dict, dict, list[dict]]:
    """Time, judge, and time again while anything is flagged, at most ``remeasure`` more times.

    ``measure(attempt)``: ``{name: [seconds of each pass]}`` of every model, side by side
    (:func:`time_round_robin`; ``attempt`` 0 first); ``judge(times)``: ``{name: [flags]}``. Every
    attempt measures all models again, so that a comparison never mixes two attempts' loads; the
    last attempt is kept and what is still flagged stays flagged. Returns (times, flags, history:
    one ``{"flagged": [label], "median_pass_s": {label: s}}`` per attempt)."""
    history = []
    for attempt in range(remeasure + 1):
        times = measure(attempt)
        flags = judge(times)
        flagged = [label(name) for name, found in flags.items() if found]
        history.append({"flagged": flagged, "median_pass_s": {label(n): median(v) for n, v in times.items()}})
        if not flagged:
            break
        if attempt < remeasure:
            say(f"flagged timings ({', '.join(flagged)}): measuring every model again ({attempt + 1} of {remeasure})")
    return times, flags, history


# ----------------------------------------------------------------------------------------------------------
# output

#: the mark of a flagged figure in the text tables
FLAG_MARK = "!"
FLAG_LEGEND = f"'{FLAG_MARK}': flagged figure (implausible or unstable, see the flag lines): not a clean number"


def flag_lines(flags: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """``flag: <what>: <message>`` lines of ``(what, messages)`` pairs, each message once per ``what``."""
    return [f"flag: {what}: {message}" for what, messages in flags for message in dict.fromkeys(messages)]


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_count(n: int) -> str:
    """``160.61M`` / ``93.8k``: a parameter count for a table cell."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def table_lines(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]]) -> list[str]:
    """The header line and one line per row, each cell formatted with its column's spec."""
    lines = ["  ".join(format(name, spec) for name, spec in columns)]
    lines += ["  ".join(format(cell, spec) for cell, (_, spec) in zip(cells, columns)) for cells in rows]
    return lines


def write_result(result: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
