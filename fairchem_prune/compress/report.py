"""What ``fairchem-prune compress`` writes: one row per model (validation error, cost), ``compress.json``,
``report.md`` and the Pareto plot (error against throughput, the pick marked)."""

from __future__ import annotations

import json
from pathlib import Path

from fairchem_prune.files import atomic_path


def candidate_rows(models: list[dict], cost: dict[int, dict]) -> list[dict]:
    """One row per model, the reference first. ``models``: ``name, blocks, kept, distilled, error`` (its
    validation metric, fairchem's units) and ``checkpoint``; ``cost``: block count -> the benchmark's
    ``samples_per_s, speedup`` (measured against the full model), ``flop_bound, params,
    gflops_per_sample, peak_memory_mb`` and ``flags`` (implausible measurements). Adds ``excess``
    (relative to the reference)."""
    rows = [{**model, **cost[model["blocks"]]} for model in models]
    for row in rows:
        row["excess"] = row["error"] / rows[0]["error"] - 1.0
    return rows


def table(result: dict) -> str:
    """Markdown table of every model, the pick in bold."""
    metric, limit = result["metric"], result["limit"]
    lines = [f"| model | blocks kept | val {metric} | vs full | within | samples/s | speed-up (bound) | params | peak MB |",
             "|---|---|---:|---:|:---:|---:|---:|---:|---:|"]
    for row in [result["reference"], *result["candidates"]]:
        name = f"**{row['name']}**" if row["name"] == result["pick"] else row["name"]
        within = "ref" if row is result["reference"] else ("yes" if row["error"] <= limit else "no")
        lines.append(f"| {name} | {row['kept']} | {row['error']:.4g} | {100 * row['excess']:+.1f}% | {within} | "
                     f"{row['samples_per_s']:.3g} | {row['speedup']:.2f}x ({row['flop_bound']:.2f}x) | "
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
    for r in rows:
        ax.annotate(f"{r['blocks']}b", (r["samples_per_s"], r["error"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
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
        f"{result['metric']} is shown. Blocks kept by {'GradCAM relevance (relevance.png)' if settings['order'] == 'relevance' else 'position (the first k)'}.",
        f"- Budget: {result['budget']} of the full model's {result['reference']['error']:.4g}, i.e. at most {result['limit']:.4g}.",
        f"- Throughput and peak memory: the benchmark on {result['benchmark_on']} (benchmark.json); "
        "speed-up measured against the full model, FLOP bound in parentheses.", "",
        "![pareto](pareto.png)", "", table(result), "",
    ]
    if result["pick"]:
        lines.append(f"Pick: **{result['pick']}**, the fewest blocks within the budget.")
    else:
        lines.append(f"No pick: {result.get('no_pick', '')}")
    if result["final"]:
        final = result["final"]
        lines.append(f"\nFinal fine-tune ({final['length']}): val {result['metric']} {final['error']:.4g}; "
                     f"checkpoint `{final['checkpoint']}` (loads in {result['loads_in']}).")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def record_pick(out: Path, result: dict, rule, say, hint: str | None = None) -> dict:
    """Apply the budget ``rule`` to ``result``'s candidates (:func:`~fairchem_prune.compress.budget.pick`,
    with its ``hint`` of what else to try), record the pick (or why there is none) in ``result`` and write
    the outputs; the chosen row."""
    from fairchem_prune.compress.budget import pick
    from fairchem_prune.errors import PruneError

    reference = result["reference"]
    try:
        chosen = pick(result["candidates"], reference["error"], rule, **({"hint": hint} if hint else {}))
    except PruneError as err:
        result["no_pick"] = str(err)
        write_outputs(out, result)
        raise
    result["pick"] = chosen["name"]
    write_outputs(out, result)
    say(f"pick: {chosen['name']} ({result['metric']} {chosen['error']:.4g} against {reference['error']:.4g}, "
        f"{chosen['speedup']:.2f}x throughput)")
    return chosen

