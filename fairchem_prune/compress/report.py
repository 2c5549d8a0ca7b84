"""What ``fairchem-prune compress`` writes: one row per model (validation error, cost), ``compress.json``,
``report.md`` and the Pareto plot (error against throughput, the pick marked)."""

from __future__ import annotations

import json
from pathlib import Path

from fairchem_prune.files import atomic_path


def candidate_rows(models: list[dict], cost: dict[int, dict]) -> list[dict]:
    """One row per model, the reference first. ``models``: ``name, blocks, kept, distilled, error`` (its
    validation metric, fairchem's units), ``efwt`` (its validation EFwT, a fraction; None where the
    task does not score it) and ``checkpoint``; ``cost``: block count -> the benchmark's
    ``samples_per_s, speedup`` (measured against the full model), ``flop_bound, params,
    gflops_per_sample, peak_memory_mb`` and ``flags`` (implausible measurements). Adds ``excess``
    (relative to the reference)."""
    rows = [{**model, **cost[model["blocks"]]} for model in models]
    for row in rows:
        row["excess"] = row["error"] / rows[0]["error"] - 1.0
    return rows


def pick_notes(result: dict, chosen: dict, by: str) -> list[str]:
    """What the report says about a pick by the rule ``by`` beside the measured throughputs: that
    ``fastest`` fell back (no trustworthy throughput within the budget), each model with more blocks
    than ``chosen`` that measured faster, and the flagged throughputs a ``fastest`` pick left out."""
    from fairchem_prune.compress.budget import trusted_fastest

    rows, limit = [result["reference"], *result["candidates"]], result["limit"]
    within = [c for c in result["candidates"] if c["error"] <= limit]
    notes = []
    fell_back = by == "fastest" and trusted_fastest(within) is None
    if fell_back:
        notes.append("no candidate within the budget has a trustworthy throughput (every one is flagged): "
                     "picked by the fewest blocks instead")
    for row in rows:
        if row["blocks"] > chosen["blocks"] and row["samples_per_s"] > chosen["samples_per_s"]:
            doubt = [r["name"] for r in (row, chosen) if r.get("flags")]
            notes.append(f"{row['name']} ({row['blocks']} blocks) measured faster than the pick ({row['samples_per_s']:.3g} vs "
                         f"{chosen['samples_per_s']:.3g} samples/s): "
                         + (f"flagged figures ({', '.join(doubt)})" if doubt else "neither figure is flagged"))
    left_out = [c["name"] for c in within if c.get("flags")]
    if by == "fastest" and left_out and not fell_back:
        notes.append(f"flagged throughputs, not used to pick: {', '.join(left_out)}")
    return notes


def table(result: dict) -> str:
    """Markdown table of every model, the pick in bold, flagged throughputs marked ``!``; the validation
    EFwT (the S2EF leaderboard's ranking metric) where the task scores it, and how long each model
    trained where that differs between them (``trained``: ``--epochs auto``)."""
    from fairchem_prune.bench_harness import FLAG_MARK

    metric, limit = result["metric"], result["limit"]
    rows = [result["reference"], *result["candidates"]]
    efwt = any(row.get("efwt") is not None for row in rows)
    trained = any("trained" in row for row in rows)  # runs of --epochs auto: how long each trained
    lines = [f"| model | blocks kept | val {metric} | vs full | within |{' val EFwT (%) |' if efwt else ''}"
             f"{' trained |' if trained else ''} samples/s | speed-up (bound) | params | peak MB |",
             "|---|---|---:|---:|:---:|" + ("---:|" if efwt else "") + ("---:|" if trained else "") + "---:|---:|---:|---:|"]
    for row in rows:
        name = f"**{row['name']}**" if row["name"] == result["pick"] else row["name"]
        within = "ref" if row is result["reference"] else ("yes" if row["error"] <= limit else "no")
        leaderboard = (" - |" if row.get("efwt") is None else f" {100 * row['efwt']:.1f} |") if efwt else ""
        length = f" {row.get('trained', '-')} |" if trained else ""
        lines.append(f"| {name} | {row['kept']} | {row['error']:.4g} | {100 * row['excess']:+.1f}% | {within} |{leaderboard}{length} "
                     f"{row['samples_per_s']:.3g}{FLAG_MARK if row.get('flags') else ''} | "
                     f"{row['speedup']:.2f}x ({row['flop_bound']:.2f}x) | "
                     f"{row['params']:,} | {row['peak_memory_mb']:.1f} |")
    return "\n".join(lines)


def plot_pareto(result: dict, path: Path) -> None:
    """Validation error against throughput, one point per model, the Pareto front, the budget line and the pick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [result["reference"], *result["candidates"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for distilled, marker, label in ((False, "o", "fine-tuned (BR)"), (True, "s", "distilled, then fine-tuned (BR+KD)")):
        chosen = [r for r in rows if r["distilled"] == distilled]
        if chosen:
            ax.scatter([r["samples_per_s"] for r in chosen], [r["error"] for r in chosen], marker=marker, label=label, zorder=3)
    for r in rows:  # a flagged throughput: "!" after the block count
        ax.annotate(f"{r['blocks']}b{'!' if r.get('flags') else ''}", (r["samples_per_s"], r["error"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front, best = [], float("inf")
    for r in sorted(rows, key=lambda r: -r["samples_per_s"]):
        if r["error"] < best:
            front.append(r)
            best = r["error"]
    ax.plot([r["samples_per_s"] for r in front], [r["error"] for r in front], color="grey", lw=1, ls="--",
            label="Pareto front", zorder=2)
    ax.axhline(result["limit"], color="tab:red", lw=1, label=f"budget ({result['budget']})")
    picked = [r for r in rows if r["name"] == result["pick"]]
    if picked:
        ax.scatter([picked[0]["samples_per_s"]], [picked[0]["error"]], s=250, marker="*", color="gold",
                   edgecolor="black", zorder=4, label=f"pick: {result['pick']}")
    ax.set(xlabel="throughput (structures/s)", ylabel=f"val {result['metric']}",
           title=f"fine-tunes of {result['length']} of each block count")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_outputs(out: Path, result: dict) -> None:
    """``compress.json``, ``pareto.png`` and ``report.md``. Besides the rows, ``result`` holds the host's
    words: ``task``, ``length`` (of the candidates' fine-tunes, e.g. "5 epochs"), ``error_is`` (which
    validation the error is), ``benchmark_on``, ``loads_in`` and the final run's ``length``."""
    with atomic_path(out / "compress.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    plot_pareto(result, out / "pareto.png")
    settings = result["settings"]
    lines = [
        "# fairchem-prune compress", "",
        f"- Checkpoint: `{settings['checkpoint']}` ({result['architecture']}, {result['reference']['blocks']} blocks)",
        f"- Task: {result['task']}",
        f"- Every model fine-tuned for {result['length']} with the same recipe; its {result['error_is']} "
        f"{result['metric']} is shown{' (' + result['stop_rule'] + ')' if result.get('stop_rule') else ''}. Blocks kept by {'GradCAM relevance (relevance.png)' if settings['order'] == 'relevance' else 'position (the first k)'}.",
        f"- Budget: {result['budget']} of the full model's {result['reference']['error']:.4g}, i.e. at most {result['limit']:.4g}.",
        f"- Throughput and peak memory: the benchmark on {result['benchmark_on']} (benchmark.json); "
        "speed-up measured against the full model, FLOP bound in parentheses.",
        *(["- val EFwT: the S2EF leaderboard's ranking metric on the same validation (fairchem's Evaluator): the "
           "share of structures with energy within 0.02 eV and every free atom's force within 0.03 eV/Å."]
          if any(row.get("efwt") is not None for row in [result["reference"], *result["candidates"]]) else []), "",
        *([f"- Distilled candidates (kd_): {result['distilled_on']}"] if result.get("distilled_on") else []), "",
        "![pareto](pareto.png)", "", table(result), "",
    ]
    flagged = [row for row in [result["reference"], *result["candidates"]] if row.get("flags")]
    if flagged:
        lines += ["Flagged throughputs (`!`: implausible or unstable after re-measuring, not clean numbers):", "",
                  *[f"- {row['name']}: {'; '.join(row['flags'])}" for row in flagged], ""]
    if result["pick"]:
        lines.append(f"Pick: **{result['pick']}**; the rule (`--pick {result['pick_by']}`): {result['pick_rule']}.")
        lines += [f"- {note}" for note in result.get("pick_notes", [])]
    else:
        lines.append(f"No pick: {result.get('no_pick', '')}")
    if result["final"]:
        final = result["final"]
        lines.append(f"\nFinal fine-tune ({final['length']}): val {result['metric']} {final['error']:.4g}; "
                     f"checkpoint `{final['checkpoint']}` (loads in {result['loads_in']}).")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def record_pick(out: Path, result: dict, rule, say, hint: str | None = None, by: str = "fewest") -> dict:
    """Apply the budget ``rule`` to ``result``'s candidates by the pick rule ``by``
    (:func:`~fairchem_prune.compress.budget.pick`, with its ``hint`` of what else to try), record the
    pick (or why there is none), the rule and :func:`pick_notes` in ``result``, write the outputs and
    say them; the chosen row."""
    from fairchem_prune.compress.budget import PICKS, pick
    from fairchem_prune.errors import PruneError

    reference = result["reference"]
    result.update(pick_by=by, pick_rule=PICKS.get(by, by), pick_notes=[])
    try:
        chosen = pick(result["candidates"], reference["error"], rule, by=by, **({"hint": hint} if hint else {}))
    except PruneError as err:
        result["no_pick"] = str(err)
        write_outputs(out, result)
        raise
    result["pick"] = chosen["name"]
    result["pick_notes"] = pick_notes(result, chosen, by)
    write_outputs(out, result)
    say(f"pick: {chosen['name']} by {result['pick_rule']} ({result['metric']} {chosen['error']:.4g} against "
        f"{reference['error']:.4g}, {chosen['speedup']:.2f}x throughput{' (flagged)' if chosen.get('flags') else ''})")
    for note in result["pick_notes"]:
        say(f"note: {note}")
    return chosen

