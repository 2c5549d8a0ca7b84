"""Efficiency benchmark of block reduction beside fairchem-core 2.x (UMA, eSEN): for each number of
kept blocks k, the model keeping the first k blocks, with its mixture of linear experts (MoLE) as
trained and with the experts merged for the system at hand (fairchem's own ``merge_mole``), measured
side by side in one process.

The models come from a fairchem 2 ``HydraModel`` config (YAML; random weights, e.g. the shipped
uma-m 1.1 shape ``configs/fairchem2/models/uma_m.yaml``) or from an inference checkpoint (its EMA
weights where it has them, else its raw ones, each block count built by slicing it:
:func:`fairchem_prune.fairchem2.slicing.reduced_checkpoint` and fairchem's own loader). The k-block
models share the largest model's tensors (so that ten 1.4B-parameter models are not held at once).

Inputs are built as ``FAIRChemCalculator`` builds them (``AtomicData.from_ase`` with the task name,
internal graph generation, 6 A), one system per batch; the backbone gets the overrides
``MLIPPredictUnit`` applies for its ``InferenceSettings`` (``build_inference_settings``: on-the-fly
graph, no PBC wrapping, ...), here ``activation_checkpointing=False``, ``compile=False``, ``tf32=False``,
float32, and is prepared with ``HydraModel.prepare_for_inference`` as ``MLIPPredictUnit`` does on its
first call (``merge_mole=True``: one merged model per system, as a merged predict unit is tied to one
composition, task, charge and spin). A pass predicts energy, conservative forces and (where the model
regresses it) stress of every system: forward + autograd backward to positions and cell.

Measured per block count and expert mode (:mod:`fairchem_prune.bench_harness`, shared with the 1.x
benchmark): parameters; FLOPs of one pass (``FlopCounterMode``: dense ops only, forward and backward)
and the FLOP bound (FLOPs of the largest model / FLOPs of this one); throughput (structures/s,
atoms/s; median of ``repeats`` round-robin passes, spread (max - min) / median); measured speed-up
against the largest model of the same expert mode and against the largest MoLE model; peak memory;
flags for physically implausible or unstable figures (:func:`~fairchem_prune.bench_harness.plausibility_flags`,
per expert mode), flagged timings measured again, every model side by side, at most ``remeasure`` times
(:func:`~fairchem_prune.bench_harness.measure_until_plausible`). The merged and the MoLE outputs of each model are
compared (energy, forces).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from fairchem_prune import bench_harness, console
from fairchem_prune.errors import PruneError, require_device
from fairchem_prune.fairchem2 import escn_md
from fairchem_prune.fairchem2.checkpoints import (
    has_ema,
    hydra_model,
    load_model,
    read_inference_checkpoint,
    source_blocks,
)
from fairchem_prune.fairchem2.slicing import reduced_checkpoint

#: default model: the uma-m 1.1 shape, random weights
DEFAULT_MODEL = "configs/fairchem2/models/uma_m.yaml"
#: expert modes: the MoLE model as trained, the experts merged for each system
MODES = ("mole", "merged")
MODE_LABELS = {"mole": "MoLE", "merged": "merged"}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


# ----------------------------------------------------------------------------------------------------------
# systems


def _cu111(size, adsorbate):
    from ase import Atoms
    from ase.build import add_adsorbate, fcc111

    slab = fcc111("Cu", size=size, vacuum=8.0, a=3.61)
    if adsorbate == "OH":
        add_adsorbate(slab, Atoms("OH", positions=[(0, 0, 0), (0, 0, 0.97)]), 2.0, "fcc")
    else:  # CO, C down
        add_adsorbate(slab, Atoms("CO", positions=[(0, 0, 0), (0, 0, 1.15)]), 1.9, "ontop")
    slab.pbc = True  # periodic in x, y, z with vacuum, as in OC20
    return slab


def _si_bulk():
    from ase.build import bulk

    return bulk("Si", "diamond", a=5.43, cubic=True)


def _cu_bulk():
    from ase.build import bulk

    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))


#: name -> (builder, task, description); positions rattled by 0.03 A (seed 0)
SYSTEMS = {
    "cu111_oh": (lambda: _cu111((2, 2, 3), "OH"), "oc20", "Cu(111) 2x2x3 slab, 8 A vacuum, OH in the fcc hollow"),
    "cu111_co": (lambda: _cu111((3, 3, 3), "CO"), "oc20", "Cu(111) 3x3x3 slab, 8 A vacuum, CO on top"),
    "si_bulk": (_si_bulk, "omat", "diamond Si, 8-atom cubic cell (a = 5.43 A)"),
    "cu_bulk": (_cu_bulk, "omat", "fcc Cu, 2x2x2 cubic cells (32 atoms, a = 3.61 A)"),
}
DEFAULT_SYSTEMS = ("cu111_oh", "si_bulk")


def build_system(name: str):
    """(ASE atoms, task) of a built-in system."""
    if name not in SYSTEMS:
        raise PruneError(f"--systems: unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    builder, task, _ = SYSTEMS[name]
    atoms = builder()
    atoms.rattle(stdev=0.03, seed=0)
    atoms.info.update(charge=0, spin=0)
    return atoms, task


def system_batch(atoms, task: str, device: str):
    """A one-system batch as ``FAIRChemCalculator`` builds it (internal graph generation)."""
    from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch

    data = AtomicData.from_ase(atoms, task_name=task, r_edges=False, r_data_keys=["spin", "charge"], radius=6.0)
    return atomicdata_list_to_batch([data]).to(device)


def model_tasks(model_config: dict) -> list[str]:
    """The task (dataset) names a model's backbone embeds."""
    backbone = model_config["backbone"]
    return sorted(backbone.get("dataset_mapping") or backbone.get("dataset_list") or [])


# ----------------------------------------------------------------------------------------------------------
# models


def inference_settings(merge: bool):
    from fairchem.core.units.mlip_unit.api.inference import InferenceSettings

    return InferenceSettings(tf32=False, activation_checkpointing=False, merge_mole=merge, compile=False,
                             external_graph_gen=False)


def settings_record(settings) -> dict:
    return {f.name: (v if isinstance(v, (bool, int, float, str, type(None))) else str(v))
            for f in dataclasses.fields(settings) for v in [getattr(settings, f.name)]}


def with_inference_overrides(model_config: dict) -> dict:
    """``model_config`` with the backbone overrides ``MLIPPredictUnit`` applies for these settings."""
    from fairchem.core.common.registry import registry

    config = copy.deepcopy(model_config)
    cls = registry.get_model_class(config["backbone"]["model"])
    config["backbone"].update(cls.build_inference_settings(inference_settings(False)))
    return config


def read_model_config(path: Path, given: str) -> dict:
    """The ``HydraModel`` config of a YAML file (at its top or under ``model:``)."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PruneError(f"model config {given} cannot be read ({str(err).splitlines()[0]})") from None
    if isinstance(config, dict) and "backbone" not in config and isinstance(config.get("model"), dict):
        config = config["model"]
    if not isinstance(config, dict) or not isinstance(config.get("backbone"), dict):
        raise PruneError(f"model config {given} is not a fairchem 2 HydraModel config (no backbone: section)")
    return config


def _share(model, top_state: dict, k: int) -> None:
    """Point the k-block ``model``'s tensors at the largest model's (same values: its first k blocks)."""
    state = escn_md.slice_state_dict(top_state, list(range(k)))
    model.load_state_dict(state, strict=True, assign=True)


def _prepare(model, batch, merge: bool):
    model.prepare_for_inference(batch, inference_settings(merge))
    return model.requires_grad_(False).eval()


class Source:
    """Where the models come from: a YAML config (random weights) or an inference checkpoint."""

    def __init__(self, model: str | Path, seed: int = 0):
        from fairchem.core.models.uma.compat import apply_uma_compat_fixups

        self.given, path = str(model), Path(model)
        if not path.exists() and not path.is_absolute() and path.parts[:1] == ("configs",):
            from fairchem_prune.resources import config_path

            path = config_path(Path(*path.parts[1:]))
        self.path, self.seed = path, seed
        self.checkpoint = None
        if path.suffix in CHECKPOINT_SUFFIXES or (path.is_file() and path.suffix not in (".yaml", ".yml")):
            self.checkpoint = read_inference_checkpoint(path)  # missing file, 1.x checkpoint, ... : PruneError
            self.model_config = copy.deepcopy(self.checkpoint.model_config)
            self.use_ema = has_ema(self.checkpoint)
            self.weights = "EMA" if self.use_ema else "raw"
            self.kind = "checkpoint"
        else:
            if not path.is_file():
                raise PruneError(f"model config {model}: no such file")
            self.model_config = read_model_config(path, self.given)
            self.weights = f"random (seed {seed})"
            self.kind = "config"
        self.where = f"{self.kind} {model}"
        self.num_blocks = escn_md.num_blocks(self.model_config, self.where)
        # fairchem's own load-time fix-up (model_id of UMA 1.1 from backbone.model_version) for configs
        holder = type("Config", (), {"model_config": self.model_config})()
        if self.checkpoint is None:
            try:
                apply_uma_compat_fixups(holder, checkpoint_location=str(path))
            except RuntimeError as err:
                raise PruneError(f"{self.where}: {str(err).strip().splitlines()[0]} (set backbone.model_version or "
                                 "model_id)") from None

    @property
    def num_experts(self) -> int:
        return int(self.model_config["backbone"].get("num_experts", 0) or 0)

    def build(self, k: int):
        """The k-block ``HydraModel`` (eval mode, on the CPU)."""
        if self.checkpoint is not None:
            kept = list(range(k))
            origin = source_blocks(self.checkpoint, self.num_blocks)[:k]
            reduced = reduced_checkpoint(self.checkpoint, kept, origin, self.path)
            reduced.model_config = with_inference_overrides(reduced.model_config)
            return hydra_model(load_model(reduced, self.path, use_ema=self.use_ema)).eval()
        import hydra

        config = with_inference_overrides(escn_md.reduced_config(self.model_config, list(range(k))))
        torch.manual_seed(self.seed)
        try:
            return hydra.utils.instantiate(config).eval()
        except Exception as err:  # hydra wraps the constructor's error
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise PruneError(f"fairchem cannot build the model of {self.where} ({reason})") from None


def build_models(source: Source, blocks: Sequence[int], progress: bool = True) -> dict:
    """``{k: HydraModel}``; every model holds the largest one's tensors (its first k blocks)."""
    models = {}
    top_state = None
    for k in console.progress(blocks, desc="building models", unit="model", disable=not progress):
        model = source.build(k)
        if top_state is None:
            top_state = model.state_dict(keep_vars=True)  # the Parameter objects themselves: shared
        else:
            _share(model, top_state, k)
        models[k] = model
    return models


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------
# one pass


def _tensor(out: dict, task: str, name: str):
    value = out.get(f"{task}_{name}", out.get(name))
    if isinstance(value, dict):
        value = value.get(name)
    return value


def predict_pass(pairs: Sequence[tuple]) -> list[dict]:
    """Energy, forces (and stress) of every ``(model, batch, task)``: forward + autograd backward."""
    results = []
    for model, batch, task in pairs:
        data = batch.clone()
        regress = model.backbone.regress_config
        if not regress.direct_forces and (regress.forces or regress.stress):
            data["pos"].requires_grad_(True)
            if regress.stress:
                data["cell"].requires_grad_(True)
        out = model(data)
        results.append({name: _tensor(out, task, name).detach() for name in ("energy", "forces")
                        if _tensor(out, task, name) is not None})
    return results


# ----------------------------------------------------------------------------------------------------------
# the benchmark


def default_blocks(num_blocks: int) -> list[int]:
    """b, b-2, b-4, b-6 (those >= 1): 10,8,6,4 for uma-m."""
    return [k for k in range(num_blocks, num_blocks - 7, -2) if k >= 1]


def run_benchmark(
    model: str | Path = DEFAULT_MODEL,
    blocks: Sequence[int] | None = None,
    systems: Sequence[str] = DEFAULT_SYSTEMS,
    modes: Sequence[str] = MODES,
    repeats: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
    remeasure: int = bench_harness.REMEASURE,
) -> dict:
    """Benchmark the k-block models of ``model`` (a HydraModel YAML or an inference checkpoint) for
    each k in ``blocks`` (default :func:`default_blocks`), with the experts as trained and merged;
    flagged timings are measured again, every model side by side, at most ``remeasure`` times.

    Returns the JSON-ready result ``{"environment", "settings", "reference_blocks", "rows", "notes"}``,
    one row per block count (largest first: the reference) holding one entry per expert mode.
    """
    require_device(device)
    bench_harness.check_counts(repeats=(repeats, 1), warmup=(warmup, 0), remeasure=(remeasure, 0))
    modes = list(dict.fromkeys(modes))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise PruneError(f"--experts must name {' and/or '.join(MODES)}, got {','.join(modes) or 'nothing'}")
    systems = list(dict.fromkeys(systems))
    if not systems:
        raise PruneError(f"--systems is empty; choose from {', '.join(SYSTEMS)}")
    built = [build_system(name) for name in systems]
    if threads is not None:
        if threads < 1:
            raise PruneError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)

    source = Source(model, seed)
    blocks = bench_harness.check_blocks(default_blocks(source.num_blocks) if blocks is None else blocks,
                                        source.num_blocks, escn_md.BLOCK_KIND)
    known = model_tasks(source.model_config)
    for name, (_, task) in zip(systems, built):
        if known and task not in known:
            raise PruneError(f"system {name} is a {task} system; {source.where} knows the tasks {', '.join(known)}")
    notes = []
    if "merged" in modes and source.num_experts == 0:
        modes = [m for m in modes if m != "merged"]
        notes.append(f"{source.where} has no experts (num_experts 0): nothing to merge, MoLE rows only")
    cpu_batches = [system_batch(atoms, task, "cpu") for atoms, task in built]
    batches = [batch.to(device) for batch in cpu_batches]
    natoms = [len(atoms) for atoms, _ in built]

    # built, merged and prepared on the CPU (as MLIPPredictUnit does), then moved
    models = build_models(source, blocks, progress)
    passes, own_bytes, params = {}, {}, {}
    for k in console.progress(blocks, desc="preparing (merging experts)", unit="model", disable=not progress):
        model = models[k]
        params[(k, "mole")] = count_parameters(model)
        if "merged" in modes:
            merged = []
            for batch in cpu_batches:  # a copy of the modules sharing the weights, merged for one system
                shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
                merged.append(_prepare(copy.deepcopy(model, shared), batch, merge=True).to(device))
            passes[(k, "merged")] = [(m, b, t) for m, b, (_, t) in zip(merged, batches, built)]
            params[(k, "merged")] = count_parameters(merged[0])
            own_bytes[(k, "merged")] = bench_harness.model_bytes(merged[0])
        if "mole" in modes:
            _prepare(model, cpu_batches[0], merge=False).to(device)  # shared tensors move once
            passes[(k, "mole")] = [(model, b, t) for b, (_, t) in zip(batches, built)]
            own_bytes[(k, "mole")] = bench_harness.model_bytes(model)
    if "mole" not in modes:
        del models

    # 1. one analysis pass per model: FLOPs, peak memory, outputs
    rows = {k: {"blocks": k, "params": params[(k, "mole")]} for k in blocks}
    outputs = {}
    for key in console.progress(list(passes), desc="counting FLOPs and memory", unit="model", disable=not progress):
        k, mode = key
        run = (lambda pairs=passes[key]: predict_pass(pairs))
        try:
            flops = bench_harness.count_flops(run)
        except (RuntimeError, KeyError, ValueError) as err:
            raise PruneError(f"the {MODE_LABELS[mode]} {k}-block model failed on {device}: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from None
        memory = bench_harness.measure_peak_memory(run, device, own_bytes[key])
        outputs[key] = run()
        rows[k][mode] = {
            "params": params[key],
            "flops": flops["total"],
            "gflops_per_structure": flops["total"] / len(batches) / 1e9,
            "flops_by_op": flops["by_op"],
            "memory": memory,
        }
    if len(modes) == 2:
        for k in blocks:
            a, b = outputs[(k, "mole")], outputs[(k, "merged")]
            rows[k]["max_abs_diff_merged_vs_mole"] = {
                name: max(float((x[name].float() - y[name].float()).abs().max()) for x, y in zip(a, b))
                for name in a[0] if name in b[0]
            }

    # 2. throughput, round-robin over all models; again while a figure is flagged
    runs = {key: (lambda pairs=passes[key]: predict_pass(pairs)) for key in passes}

    def measure(attempt: int) -> dict:
        desc = f"passes, again ({attempt} of {remeasure})" if attempt else "passes"
        return bench_harness.time_round_robin(runs, 0 if attempt else warmup, repeats, device, desc, progress)

    times, flags, attempts = bench_harness.measure_until_plausible(
        measure, lambda found: timing_flags(rows, blocks, modes, bench_harness.timing_stats(found)), remeasure,
        label=lambda key: f"{key[0]}-block {MODE_LABELS[key[1]]}", say=bench_harness.note if progress else lambda message: None)
    for (k, mode), values in times.items():
        median = bench_harness.median(values)
        rows[k][mode].update(pass_times_s=values, median_pass_s=median, min_pass_s=min(values),
                             spread=bench_harness.relative_spread(values), flags=flags[(k, mode)],
                             structures_per_s=len(batches) / median, atoms_per_s=sum(natoms) / median)

    # 3. ratios to the largest model: of the same mode, and of the MoLE model; flags
    ref = rows[blocks[0]]
    for mode in modes:
        for k in blocks:
            entry = rows[k][mode]
            entry["flop_bound_speedup"] = ref[mode]["flops"] / entry["flops"]
            entry["measured_speedup"] = ref[mode]["median_pass_s"] / entry["median_pass_s"]
            entry["measured_over_bound"] = entry["measured_speedup"] / entry["flop_bound_speedup"]
            entry["speedup_vs_full_mole"] = bench_harness.ratio(ref.get("mole", {}).get("median_pass_s"),
                                                                entry["median_pass_s"])
            entry["peak_memory_mb"] = entry["memory"]["peak_bytes"] / 2**20
    for k in blocks:
        rows[k]["params_pct"] = 100.0 * rows[k]["params"] / ref["params"]
        if len(modes) == 2:
            rows[k]["merged_over_mole"] = rows[k]["merged"]["structures_per_s"] / rows[k]["mole"]["structures_per_s"]

    import fairchem.core

    version = getattr(fairchem.core, "__version__", None)
    if version is None:
        import importlib.metadata

        version = importlib.metadata.version("fairchem-core")
    regress = passes[next(iter(passes))][0][0].backbone.regress_config
    settings = {
        "family": escn_md.LABEL, "model": source.given, "source": source.kind, "weights": source.weights,
        "num_blocks": source.num_blocks, "num_experts": source.num_experts, "blocks": blocks, "modes": modes,
        "systems": [{"name": name, "task": task, "natoms": len(atoms), "formula": atoms.get_chemical_formula(),
                     "description": SYSTEMS[name][2]} for name, (atoms, task) in zip(systems, built)],
        "structures": len(batches), "atoms_per_structure_mean": sum(natoms) / len(natoms),
        "device": device, "dtype": "float32", "repeats": repeats, "warmup": warmup, "seed": seed,
        "outputs": ["energy", "forces"] + (["stress"] if regress.stress else []),
        "direct_forces": bool(regress.direct_forces),
        "inference_settings": {mode: settings_record(inference_settings(mode == "merged")) for mode in modes},
        "model_config": source.model_config,
    }
    notes.append("FLOP bound: FLOPs of the largest model / FLOPs of this one, dense ops only (FlopCounterMode); "
                 "measured speed-ups are of the same expert mode, 'vs full MoLE' against the largest MoLE model")
    return {
        "environment": bench_harness.environment(device, "float32", version),
        "settings": settings,
        "reference_blocks": blocks[0],
        "rows": [rows[k] for k in blocks],
        "timing": {"spread_limit": bench_harness.SPREAD_LIMIT, "remeasure": remeasure, "attempts": attempts},
        "notes": notes,
    }


def timing_flags(rows: dict, blocks: Sequence[int], modes: Sequence[str], stats: dict) -> dict:
    """``{(k, mode): [flags]}`` of the timings ``stats`` (:func:`bench_harness.timing_stats`), each expert
    mode on its own (:func:`bench_harness.plausibility_flags`, FLOP bounds from ``rows``)."""
    flags = {}
    for mode in modes:
        entries = [{"blocks": k, **stats[(k, mode)],
                    "flop_bound_speedup": bench_harness.ratio(rows[blocks[0]][mode]["flops"], rows[k][mode]["flops"])}
                   for k in blocks]
        flags.update({(k, mode): found for k, found in zip(blocks, bench_harness.plausibility_flags(entries))})
    return flags


# ----------------------------------------------------------------------------------------------------------
# output


def format_table(result: dict) -> str:
    """The result as a text table: the MoLE rows, then the merged rows."""
    env, settings = result["environment"], result["settings"]
    systems = ", ".join(f"{s['name']} ({s['formula']}, {s['natoms']} atoms, {s['task']})" for s in settings["systems"])
    flagged = any(row[mode].get("flags") for row in result["rows"] for mode in settings["modes"])
    attempts = len(result.get("timing", {}).get("attempts", [])) or 1
    header = (
        f"{settings['family']} block reduction benchmark: {settings['model']} (weights: {settings['weights']}, "
        f"{settings['num_blocks']} blocks, {settings['num_experts']} experts); {' + '.join(settings['outputs'])} of "
        f"{systems} per pass\n"
        f"device {env['device']} ({env['device_name']}), {env['threads']} torch threads, {settings['dtype']}, "
        f"torch {env['torch']}, fairchem-core {env['fairchem_core']}; median of {settings['repeats']} passes after "
        f"{settings['warmup']} warm-up, models interleaved; ratios to {result['reference_blocks']} blocks"
        + (f"; timed {attempts} times (flagged timings measured again)" if attempts > 1 else "")
        + (f"\n{bench_harness.FLAG_LEGEND}" if flagged else "")
    )
    columns = [
        ("blocks", ">6"), ("experts", ">7"), ("params", ">9"), ("params%", ">7"), ("GFLOP/str", ">9"),
        ("bound x", ">7"), ("str/s", ">7"), ("atoms/s", ">8"), ("meas. x", ">8"), ("spread", ">6"),
        ("meas/bnd", ">8"), ("vs MoLE", ">7"), ("peak MB", ">8"),
    ]
    cells = []
    for mode in settings["modes"]:
        for row in result["rows"]:
            e = row[mode]
            mark = bench_harness.FLAG_MARK if e["flags"] else ""
            cells.append([
                str(row["blocks"]), MODE_LABELS[mode], bench_harness.format_count(e["params"]),
                f"{100.0 * e['params'] / result['rows'][0][mode]['params']:.1f}", f"{e['gflops_per_structure']:.3f}",
                f"{e['flop_bound_speedup']:.3f}", f"{e['structures_per_s']:.3g}{mark}", f"{e['atoms_per_s']:.3g}{mark}",
                f"{e['measured_speedup']:.3f}{mark}", f"{100 * e['spread']:.0f}%",
                f"{100 * e['measured_over_bound']:.1f}%", bench_harness.fmt(e["speedup_vs_full_mole"], ".3f"),
                f"{e['peak_memory_mb']:.1f}",
            ])
    lines = [header, *bench_harness.table_lines(columns, cells)]
    lines += bench_harness.flag_lines([(f"{row['blocks']} blocks, {MODE_LABELS[mode]}", row[mode]["flags"])
                                       for row in result["rows"] for mode in settings["modes"]])
    lines += [f"note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)


write_result = bench_harness.write_result
