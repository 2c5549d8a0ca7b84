"""The demo's tables, figures and ``report.md``: the paper's Fig. 2 (relevance), Table 1 (BR and BR+KD
error per pre-training source), Fig. 3 (fine-tuned error per block count), Fig. 4 (validation curves
against wall time) and Table 2 (efficiency), with a check of each qualitative finding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fairchem_prune.trainers.plateau import Plateau, late_change

INIT_STYLE = {"BR": ("tab:blue", "o"), "BR/RandomMLP": ("tab:orange", "s"), "BR+KD": ("tab:green", "^"),
              "scratch": ("tab:gray", "x")}


def run_name(k: int, seed: int = 0, option: str | None = None) -> str:
    """``kd_<k>b`` (seed 0), ``kd_<k>b_s<seed>``, ``kd_<k>b_<option>`` (seed 0, e.g. ``kd_4b_teacher_md``)."""
    if option is not None:
        return f"kd_{k}b_{option.lower().replace(' ', '_').replace('-', '_')}"
    return f"kd_{k}b" if seed == 0 else f"kd_{k}b_s{seed}"


def _mev(value: float) -> str:
    return f"{1000 * value:.1f}"


def relevance_table(result: dict) -> str:
    blocks = result["blocks"]
    lines = ["| source | " + " | ".join(blocks) + " |", "|---|" + "---:|" * len(blocks)]
    for name, entry in result["datasets"].items():
        lines.append(f"| {name} (n={entry['num_samples']}) | " + " | ".join(f"{s:.3f}" for s in entry["combined"]) + " |")
    return "\n".join(lines)


def _curve_series(curve: list[list[float]], columns: list[str] | None) -> list[tuple[str, list[float]]]:
    """(label, values) of each force-MAE column of ``[[epoch, MAE, ...], ...]``; ``columns``: the
    columns' names (``"omol force MAE (eV/Å)"`` labels ``omol``), else one unnamed series."""
    names = [c.split(" force")[0] for c in (columns or [])[1:]] or [""] * (len(curve[0]) - 1)
    return [(name, [row[i] for row in curve]) for i, name in enumerate(names, 1)]


def teacher_convergence(curve: list[list[float]], last: int = 5, columns: list[str] | None = None) -> str:
    """One sentence on a teacher's ``[[epoch, validation force MAE (eV/Å), ...], ...]`` (one MAE per
    ``columns`` name after the first): its best value and how much the last ``last`` validations still
    changed it."""
    epochs = [row[0] for row in curve]
    parts = []
    for name, values in _curve_series(curve, columns):
        best = int(np.argmin(values))
        tail = values[-min(last, len(values))]
        parts.append(f"{name + ' ' if name else ''}best validation force MAE {_mev(values[best])} meV/Å at epoch "
                     f"{epochs[best]:g} of {epochs[-1]:g}; the last {min(last, len(values))} validations changed it "
                     f"by {100 * (values[-1] / tail - 1):+.1f}%")
    return "; ".join(parts)


def plot_teacher_curve(curve: list[list[float]], path: Path, columns: list[str] | None = None) -> None:
    """The teacher's validation force MAE (one line per ``columns`` name after the first) against the
    training epoch."""
    plt = _pyplot()
    epochs = [row[0] for row in curve]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, values in _curve_series(curve, columns):
        ax.plot(epochs, 1000 * np.array(values), marker=".", label=name or None)
    ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="validation force MAE (meV/Å)", title="teacher pre-training on the demo mix")
    if columns:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def kd_forces(metrics: dict, k: int, source: str, seeds: int) -> list[float]:
    """Validation force MAE (eV/Å) of each seed's k-block student on ``source``."""
    return [metrics[run_name(k, seed)][source]["forces_mae"] for seed in range(seeds)]


def gap_closed(br: float, kd: float, teacher: float) -> float:
    """The share of the BR force gap that distillation closes: (BR - KD) / (BR - teacher)."""
    return (br - kd) / (br - teacher) if br != teacher else float("nan")


def _spread(values: list[float], scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    mean = scale * float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}{unit}"
    return f"{mean:.{digits}f} ± {scale * float(np.std(values)):.{digits}f}{unit}"


def reduction_table(teacher_blocks: int, counts: list[int], metrics: dict, params: dict[str, int], seeds: int = 1) -> str:
    """Table 1 analogue: force MAE (meV/Å) per source, gap to the teacher in parentheses, and the share of
    the BR gap that distillation closes (mean ± standard deviation over ``seeds``)."""
    sources = list(metrics["teacher"])
    head = "| blocks | parameters | " + " | ".join(f"{s} BR | {s} BR+KD | {s} closed" for s in sources) + " |"
    lines = [head, "|---:|---:|" + "---:|---:|---:|" * len(sources)]
    teacher = {s: metrics["teacher"][s]["forces_mae"] for s in sources}
    lines.append(f"| {teacher_blocks} (teacher) | {params['teacher']:,} | "
                 + " | ".join(f"{_mev(teacher[s])} | {_mev(teacher[s])} | " for s in sources) + " |")
    for k in counts:
        cells = []
        for s in sources:
            br = metrics[f"br_{k}b"][s]["forces_mae"]
            kd = kd_forces(metrics, k, s, seeds)
            closed = [gap_closed(br, value, teacher[s]) for value in kd]
            cells += [f"{_mev(br)} ({1000 * (br - teacher[s]):+.1f})",
                      f"{_spread(kd, 1000)} ({1000 * (float(np.mean(kd)) - teacher[s]):+.1f})",
                      _spread(closed, 100, 0, "%")]
        lines.append(f"| {k} | {params[f'br_{k}b']:,} ({100 * params[f'br_{k}b'] / params['teacher']:.0f}%) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def leaderboard_table(teacher_blocks: int, counts: list[int], metrics: dict, seeds: int = 1) -> str:
    """Table 1's models in the S2EF leaderboard's terms, per source: EFwT (%, the share of structures
    with energy within 0.02 eV and every force within 0.03 eV/Å), energy MAE (meV) and force cosine;
    BR+KD as mean ± standard deviation over ``seeds``. "-": a result from before EFwT was scored."""
    sources = list(metrics["teacher"])
    columns = (("energy_forces_within_threshold", 100, 1), ("energy_mae", 1000, 1), ("forces_cosine_similarity", 1, 3))

    def cells(names: list[str]) -> list[str]:
        out = []
        for s in sources:
            for key, scale, digits in columns:
                values = [metrics[name][s].get(key) for name in names]
                out.append("-" if None in values else _spread(values, scale, digits))
        return out

    lines = ["| model | " + " | ".join(f"{s} EFwT (%) | {s} energy MAE (meV) | {s} force cos" for s in sources) + " |",
             "|---|" + "---:|---:|---:|" * len(sources)]
    rows = [(f"teacher ({teacher_blocks} blocks)", ["teacher"])]
    for k in counts:
        rows += [(f"BR {k}", [f"br_{k}b"]), (f"BR+KD {k}", [run_name(k, seed) for seed in range(seeds)])]
    lines += [f"| {label} | " + " | ".join(cells(names)) + " |" for label, names in rows]
    return "\n".join(lines)


def options_table(reduced: dict) -> str:
    """The distillation options at one block count: force MAE and gap closed per source, cost per step."""
    metrics, k, options = reduced["metrics"], reduced["options"]["blocks"], reduced["options"]
    sources = list(metrics["teacher"])
    lines = ["| objective | " + " | ".join(f"{s} BR+KD | {s} closed" for s in sources) + " | cost per step |",
             "|---|" + "---:|---:|" * len(sources) + "---:|"]
    rows = [("paper (forces + features)", run_name(k), options["cost"].get("config"))]
    rows += [(f"+ {name}", run_name(k, 0, name), options["cost"].get(name)) for name in options["names"]]
    for label, name, cost in rows:
        cells = []
        for s in sources:
            value = metrics[name][s]["forces_mae"]
            closed = gap_closed(metrics[f"br_{k}b"][s]["forces_mae"], value, metrics["teacher"][s]["forces_mae"])
            cells += [_mev(value), f"{100 * closed:.0f}%"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'-' if cost is None else f'{cost:.2f}x'} |")
    return "\n".join(lines)


def model_groups(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """The fine-tuning rows of each model ``(init, blocks)``, one per seed, largest models first."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in sorted(rows, key=lambda r: (-r["blocks"], list(INIT_STYLE).index(r["init"]), r.get("seed", 0))):
        groups.setdefault((row["init"], row["blocks"]), []).append(row)
    return groups


def seed_forces(group: list[dict]) -> list[float]:
    """Test force MAE (eV/Å) of each seed's run of one model."""
    return [row["test"]["forces_mae"] for row in group]


def late_gain(curve: list) -> float:
    """How much a run's best validation force MAE changed over the last 20 % of its steps (the plateau
    rule's :func:`~fairchem_prune.trainers.plateau.late_change`; negative: it still improved, NaN: no
    validation before them); ``curve``: ``[(seconds, step, value), ...]``."""
    change = late_change([(step, value) for _, step, value in curve], Plateau().window)
    return float("nan") if change is None else change


#: a fine-tune whose best validation force MAE improved by less than this over its last 20 % has plateaued
PLATEAU = Plateau().tolerance


def finetune_table(rows: list[dict]) -> str:
    """Test force / energy MAE after fine-tuning (mean ± standard deviation over the seeds), per block
    count and starting point."""
    groups = model_groups(rows)
    inits = [i for i in INIT_STYLE if any(init == i for init, _ in groups)]
    blocks = sorted({k for _, k in groups}, reverse=True)
    lines = ["| blocks | " + " | ".join(f"{i}: forces (meV/Å) / energy (meV) / train s" for i in inits) + " |",
             "|---:|" + "---:|" * len(inits)]
    for k in blocks:
        cells = []
        for init in inits:
            group = groups.get((init, k))
            cells.append("-" if group is None else
                         f"{_spread(seed_forces(group), 1000)} / {_spread([r['test']['energy_mae'] for r in group], 1000)} / "
                         f"{float(np.mean([r['train_seconds'] for r in group])):.0f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def convergence_table(rows: list[dict]) -> str:
    """Per model: its runs (seeds), best validation force MAE and how much it still improved over the last
    20 % of the steps (:func:`late_gain`; plateaued when by less than :data:`PLATEAU`)."""
    lines = ["| model | runs | best val force MAE (meV/Å) | change over the last 20 % | plateaued |", "|---|---:|---:|---:|:---:|"]
    for (init, k), group in model_groups(rows).items():
        gains = [late_gain(r["curve"]) for r in group]
        lines.append(f"| {init} {k} | {len(group)} | {_spread([r['best_val_forces_mae'] for r in group], 1000)} | "
                     f"{_spread(gains, 100, 1, '%')} | {sum(-g < PLATEAU for g in gains)}/{len(group)} |")
    return "\n".join(lines)


def efficiency_table(result: dict) -> str:
    """Table 2 analogue from a :func:`fairchem_prune.benchmark.run_benchmark` result; a figure the
    benchmark still flagged after re-measuring is marked ``!`` and its flags listed below."""
    lines = ["| blocks | parameters | GFLOPs / sample | FLOP bound | measured speed-up | measured / bound "
             "| reduced / stock | fine-tuning step speed-up |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    flags = []
    for row in result["rows"]:
        ft = row.get("finetune_speedup")
        mark, stock_mark = "!" if row.get("flags") else "", "!" if row["stock"].get("flags") else ""
        flags += [f"{row['blocks']} blocks: {flag}" for flag in row.get("flags", []) + row["stock"].get("flags", [])]
        lines.append(
            f"| {row['blocks']} | {row['params']:,} ({row['params_pct']:.0f}%) | {row['gflops_per_sample']:.4f} "
            f"| {row['flop_bound_speedup']:.2f}x | {row['measured_speedup']:.2f}x{mark} "
            f"| {100 * row['measured_over_bound']:.0f}%{mark} | {row['reduced_over_stock']:.3f}{stock_mark or mark} "
            f"| {'-' if ft is None else f'{ft:.2f}x'} |")
    if flags:
        lines += ["", "Flagged after re-measuring (`!`: implausible or unstable, not clean numbers; "
                  "run the benchmark again on an idle machine):", ""] + [f"- {flag}" for flag in flags]
    return "\n".join(lines)


def findings(relevance: dict, counts: list[int], metrics: dict, finetune: list[dict], seeds: int = 1) -> list[str]:
    """Each of the paper's qualitative findings, checked on these numbers: holds / does not hold."""
    out = []
    names = relevance["blocks"]
    for name, entry in relevance["datasets"].items():
        scores = entry["combined"]
        falling = all(a >= b for a, b in zip(scores, scores[1:]))
        out.append(f"Relevance falls with depth on {name}: {'holds' if falling else 'does not hold strictly'} "
                   f"({', '.join(f'{b} {s:.3f}' for b, s in zip(names, scores))}).")
    for source in metrics["teacher"]:
        br = [metrics[f"br_{k}b"][source]["forces_mae"] for k in counts]
        growing = all(a <= b for a, b in zip(br, br[1:])) and br[0] >= metrics["teacher"][source]["forces_mae"]
        out.append(f"BR error grows as blocks go ({source}): {'holds' if growing else 'does not hold strictly'} "
                   f"({', '.join(f'{k}b {_mev(v)}' for k, v in zip(counts, br))} meV/Å).")
        teacher = metrics["teacher"][source]["forces_mae"]
        gaps = {k: (1000 * (metrics[f"br_{k}b"][source]["forces_mae"] - teacher),
                    1000 * (float(np.mean(kd_forces(metrics, k, source, seeds))) - teacher)) for k in counts}
        narrowed = [k for k, (br_gap, kd_gap) in gaps.items() if kd_gap < br_gap]
        verdict = "holds" if len(narrowed) == len(counts) else f"holds at {narrowed or 'no'} block counts of {counts}"
        out.append(f"KD narrows the BR gap ({source}): {verdict} (gap to the teacher, BR -> BR+KD: "
                   + ", ".join(f"{k}b {a:+.1f} -> {b:+.1f}" for k, (a, b) in gaps.items()) + " meV/Å).")
    return out + downstream_findings(finetune)


def downstream_findings(rows: list[dict]) -> list[str]:
    """The paper's downstream claims, checked on the fine-tuned models (test force MAE, mean ± standard
    deviation over seeds): the reduced models against the teacher-size one, KD against BR at the same
    count, and pre-trained against scratch at the same count and epochs (equal compute). A difference
    within the seeds' spread is said to be so."""
    groups = model_groups(rows)
    out = []
    gains = [late_gain(r["curve"]) for r in rows]
    if gains:
        out.append(f"Every fine-tune plateaued (its best validation force MAE changed by less than {100 * PLATEAU:g}% over its "
                   f"last 20%): {'holds' if all(-g < PLATEAU for g in gains) else 'does not hold'} "
                   f"({sum(-g < PLATEAU for g in gains)} of {len(gains)} runs; changes {100 * min(gains):+.1f}% to {100 * max(gains):+.1f}%).")
    full = max((k for init, k in groups if init == "BR"), default=None)

    def mean_sd(key):
        values = 1000 * np.array(seed_forces(groups[key]))
        return values.mean(), values.std()

    def compare(a, b) -> str:
        (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
        single = len(groups[a]) == 1 and len(groups[b]) == 1
        spread = "" if single else (
            "; within the seeds' spread" if abs(ma - mb) <= max(sa, sb) else "; beyond the seeds' spread")
        return (f"{_spread(seed_forces(groups[a]), 1000)} vs {_spread(seed_forces(groups[b]), 1000)} meV/Å, "
                f"{100 * (ma / mb - 1):+.1f}%{spread}")

    for init, k in groups:
        if init == "BR" and k != full:
            out.append(f"After fine-tuning, BR at {k} blocks against the {full}-block model (test force MAE): {compare((init, k), ('BR', full))}.")
        if init == "BR+KD" and ("BR", k) in groups:
            better = mean_sd((init, k))[0] < mean_sd(("BR", k))[0]
            out.append(f"KD helps downstream at {k} blocks: {'holds' if better else 'does not hold'} "
                       f"(BR+KD vs BR: {compare((init, k), ('BR', k))}).")
        starts = [start for start in ("BR", "BR+KD") if (start, k) in groups]
        if init == "scratch" and starts:
            out.append(f"A {k}-block model from the pre-trained teacher beats the same model trained from scratch for the "
                       "same epochs: " + ", ".join(
                           f"{start} {'holds' if mean_sd((start, k))[0] < mean_sd((init, k))[0] else 'does not hold'} "
                           f"({compare((start, k), (init, k))})" for start in starts) + ".")
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_finetune(rows: list[dict], path: Path) -> None:
    """Fig. 3 analogue: test force MAE after fine-tuning against the number of blocks (mean and standard
    deviation over the seeds)."""
    plt = _pyplot()
    groups = model_groups(rows)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for init, (color, marker) in INIT_STYLE.items():
        points = sorted((k, 1000 * np.mean(seed_forces(g)), 1000 * np.std(seed_forces(g))) for (i, k), g in groups.items() if i == init)
        if points:
            x, y, sd = zip(*points)
            seeds = max(len(g) for (i, _), g in groups.items() if i == init)
            ax.errorbar(x, y, yerr=sd if seeds > 1 else None, color=color, marker=marker, capsize=3,
                        linestyle="none" if len(points) == 1 else "-", label=init + (f" ({seeds} seeds)" if seeds > 1 else ""))
    ax.set_xticks(sorted({k for _, k in groups}))
    ax.invert_xaxis()
    ax.set(xlabel="blocks kept", ylabel="test force MAE (meV/Å)", title="fine-tuned on the ethanol task")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Fig. 4 analogue: validation force MAE against training wall time, one panel per starting point
    (seed 0 of each model)."""
    plt = _pyplot()
    inits = [i for i in INIT_STYLE if any(r["init"] == i for r in rows)]
    blocks = sorted({r["blocks"] for r in rows}, reverse=True)
    colors = dict(zip(blocks, plt.cm.viridis(np.linspace(0.0, 0.85, len(blocks)))))
    fig, axes = plt.subplots(1, len(inits), figsize=(3.4 * len(inits), 3.4), sharey=True, squeeze=False)
    for ax, init in zip(axes[0], inits):
        for row in sorted((r for r in rows if r["init"] == init and not r.get("seed")), key=lambda r: -r["blocks"]):
            t, _, value = zip(*row["curve"])
            ax.plot(t, 1000 * np.array(value), color=colors[row["blocks"]], marker=".", label=f"{row['blocks']} blocks")
        ax.set(title=init, xlabel="training wall time (s)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("validation force MAE (meV/Å)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_report(path: Path, sections: list[tuple[str, str]]) -> None:
    path.write_text("# fairchem-prune demo report\n\n" + "\n\n".join(f"## {title}\n\n{body}" for title, body in sections) + "\n")
