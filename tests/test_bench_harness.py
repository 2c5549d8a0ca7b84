"""fairchem_prune.bench_harness: the plausibility flags and the re-measure decision on synthetic timings
(known per-pass seconds, no clock). No timed assertions."""

from __future__ import annotations

import pytest

from fairchem_prune import bench_harness
from fairchem_prune.benchmark import inference_flags


def entries(passes: dict[int, list[float]], flops: dict[int, float]) -> list[dict]:
    """plausibility_flags' entries of per-pass seconds, largest block count first."""
    top = max(passes)
    return [{"blocks": k, **bench_harness.timing_stats({k: passes[k]})[k], "flop_bound_speedup": flops[top] / flops[k]}
            for k in sorted(passes, reverse=True)]


FLOPS = {6: 6.0, 5: 5.0, 2: 2.0}  # bounds 1, 1.2, 3


def test_a_clean_run_has_no_flags():
    clean = {6: [1.00, 1.01, 0.99], 5: [0.86, 0.87, 0.85], 2: [0.40, 0.41, 0.40]}
    assert bench_harness.plausibility_flags(entries(clean, FLOPS)) == [[], [], []]


def test_the_loaded_run_of_the_issue_is_flagged():
    """5 blocks 1.49x against a bound of 1.2x, 2 blocks slower than 6: each beyond the spread (2 %)."""
    loaded = {6: [1.00, 1.01, 0.99], 5: [0.67, 0.68, 0.67], 2: [2.94, 2.95, 2.96]}
    flags = bench_harness.plausibility_flags(entries(loaded, FLOPS))
    assert flags[0] == []
    assert flags[1] == ["measured speed-up 1.493 is above the FLOP bound 1.200 by more than the spread (3.5 %)"]
    assert flags[2] == ["slower than the 6-block model (2.95 s vs 1 s per pass, beyond the spread 2.7 %)",
                        "slower than the 5-block model (2.95 s vs 0.67 s per pass, beyond the spread 2.2 %)"]


def test_a_spread_above_the_limit_is_flagged_and_widens_the_tolerance():
    # 5 blocks at 1.33x of a 1.2x bound, but its passes spread 30 %: unstable, not "above the bound"
    noisy = {6: [1.00, 1.00, 1.00], 5: [0.65, 0.75, 0.95], 2: [0.40, 0.40, 0.40]}
    flags = bench_harness.plausibility_flags(entries(noisy, FLOPS))
    assert flags == [[], ["unstable: its passes spread 40.0 % (above 10 %)"], []]
    assert bench_harness.plausibility_flags(entries(noisy, FLOPS), spread_limit=0.5) == [[], [], []]
    assert bench_harness.SPREAD_LIMIT == 0.10


def test_reduced_and_stock_of_equal_flops_far_apart_are_flagged_on_both():
    rows = {k: {"reduced": {"flops": FLOPS[k]}, "stock": {"flops": FLOPS[k]}} for k in (6, 2)}
    stats = bench_harness.timing_stats({(6, "reduced"): [1.0, 1.01], (6, "stock"): [1.0, 1.01],
                                        (2, "reduced"): [0.40, 0.40], (2, "stock"): [0.50, 0.50]})  # red/stock 1.25
    flags = inference_flags(rows, [6, 2], stats)
    message = "reduced/stock 1.250 at equal FLOPs is further from 1 than the spread (10.0 %)"
    assert flags == {(6, "reduced"): [], (6, "stock"): [], (2, "reduced"): [message], (2, "stock"): [message]}
    # 8 % apart: within the 10 % floor
    close = {**stats, (2, "stock"): {"median_pass_s": 0.432, "spread": 0.0}}
    assert inference_flags(rows, [6, 2], close)[(2, "reduced")] == []
    # other FLOPs (the stock model lacks an option of the reduced one): not compared
    rows[2]["stock"]["flops"] = 1.5
    assert inference_flags(rows, [6, 2], stats)[(2, "reduced")] == []


def judge_slower(times: dict) -> dict:
    """The flags of a 6- and a 2-block model timed as ``times``."""
    passes = {k: times[k] for k in (6, 2)}
    return dict(zip((6, 2), bench_harness.plausibility_flags(entries(passes, FLOPS))))


@pytest.mark.parametrize("attempts, remeasure, calls, flagged", [
    ([{6: [1.0, 1.0], 2: [0.4, 0.4]}], 2, 1, []),                                   # clean: timed once
    ([{6: [1.0, 1.0], 2: [1.5, 1.5]}, {6: [1.0, 1.0], 2: [0.4, 0.4]}], 2, 2, []),    # flagged, then clean
    ([{6: [1.0, 1.0], 2: [1.5, 1.5]}] * 3, 2, 3, [2]),                               # flagged to the end
    ([{6: [1.0, 1.0], 2: [1.5, 1.5]}] * 3, 0, 1, [2]),                               # never measured again
])
def test_flagged_timings_are_measured_again_a_bounded_number_of_times(attempts, remeasure, calls, flagged):
    seen, said = [], []

    def measure(attempt):
        seen.append(attempt)
        return attempts[attempt]

    times, flags, history = bench_harness.measure_until_plausible(measure, judge_slower, remeasure, say=said.append)
    assert seen == list(range(calls)) and times == attempts[calls - 1]
    assert [k for k, found in flags.items() if found] == flagged
    assert [h["flagged"] for h in history] == [["2"]] * (calls - 1) + [[str(k) for k in flagged]]
    assert history[0]["median_pass_s"] == {"6": 1.0, "2": attempts[0][2][0]}
    assert len(said) == calls - 1  # one line per measuring again
