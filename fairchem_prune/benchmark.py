"""Efficiency benchmark of block reduction (the paper's Table 2 analogue): for each number of kept
blocks k, the reduced model keeping k blocks and the stock fairchem model built with k blocks,
measured side by side in one process. The config's model (monolithic or hydra) picks the architecture
(:func:`fairchem_prune.architectures.of_config`); its adapter names the reduced and the stock model.

What is measured, per model:

* **parameters** (``fairchem_prune.params.count_parameters``);
* **GFLOPs per sample**, counted by ``torch.utils.flop_counter.FlopCounterMode`` over one inference
  pass of the benchmark batches, divided by the number of structures. It counts the dense linear
  algebra aten ops (``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions, attention; einsum and
  ``@`` reach it as ``mm``/``bmm``) at 2 FLOPs per multiply-add, biases not included. Scatter/gather,
  indexing, elementwise ops (activations, scale factors, basis functions) and the on-the-fly graph
  construction's non-matmul work are *not* counted, so "FLOP bound" below is the speed-up that the
  dense layers alone would allow;
* **inference throughput** (samples/s): ``warmup`` untimed rounds, then ``repeats`` timed rounds; in
  each round every model (reduced and stock, every k) runs one pass over all batches, round-robin
  with a rotating start, so drift of the machine hits all models alike; the median pass time is
  reported. ``torch.no_grad`` unless forces are energy gradients (then the pass includes the
  backward pass to the positions). On CUDA every pass ends with ``torch.cuda.synchronize()``;
* **peak memory** of one inference pass: model bytes (parameters and buffers) + the peak of tensor
  memory allocated during the pass above what was allocated before it. CUDA: from
  ``torch.cuda.max_memory_allocated``; CPU: from the allocation events of torch's profiler
  (``profile_memory=True``), i.e. live torch tensors only (not the Python heap, not allocator caching);
* **flags** (row ``flags`` for the reduced model, ``stock.flags`` for the stock one; ``!`` on the
  table's flagged figures and one ``flag:`` line each): passes spread more than 10 %, a measured
  speed-up above the FLOP bound by more than the spread of its and the reference's passes, a model
  slower than one of the same kind with more blocks beyond their spreads
  (:func:`fairchem_prune.bench_harness.plausibility_flags`), reduced and stock at equal FLOPs further
  apart than their spreads and 10 % (:func:`~fairchem_prune.bench_harness.equal_work_flags`). While
  anything is flagged, every model is timed again side by side, at most ``remeasure`` times
  (:func:`~fairchem_prune.bench_harness.measure_until_plausible`); the last attempt is reported and
  ``timing.attempts`` holds each attempt's flagged models and medians;
* **fine-tuning step time** of the reduced models: forward + backward of a dummy squared loss
  (energy, plus forces if the model predicts them) + ``AdamW.step()``, on the first batch, in train
  mode; warm-up steps, then the median of repeated steps, round-robin over k as above.

Weights are random (speed does not depend on their values); the stock k-block model gets the reduced
model's weights, and their outputs are checked to agree (from the same random seed: some architectures
draw random edge frames in each pass). With ``init="fast"`` the QR decomposition of orthogonal
initialisations is replaced by Gaussian noise of the same scale (:mod:`fairchem_prune.fast_init`;
building a 160M-parameter JMP-L with fairchem's init takes minutes on 2 CPU cores).

Timing, FLOP counting, memory, the environment record and the flags are the host-independent
:mod:`fairchem_prune.bench_harness`, which the fairchem 2 benchmark (:mod:`fairchem_prune.fairchem2.benchmark`)
shares.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from fairchem_prune import architectures, bench_harness, console
from fairchem_prune.architectures import Architecture, core_section
from fairchem_prune.errors import PruneError, require_device
from fairchem_prune.fast_init import fast_init

#: default ``--config``: JMP-L's architecture, resolved against the working directory, then the repository
DEFAULT_CONFIG = "configs/models/jmp_l.yml"
#: ``forces``: regress_forces, direct_forces (set where the stock model takes them)
FORCE_MODES = {
    "none": (False, False),      # energy only (JMP's QM9/QMOF fine-tuning; 160.61M parameters for JMP-L)
    "gradient": (True, False),   # forces = -dE/dx (JMP's MD fine-tuning; same parameters as "none")
    "direct": (True, True),      # a direct-force branch (JMP-L pre-training head; 216.42M parameters)
    "config": (None, None),      # as the config says
}
DTYPES = ("float32", "bfloat16")
#: keys of a reduced model's config that do not describe the architecture
_REDUCTION_KEYS = ("num_blocks_kept", "kept_blocks", "mlp_init", "source_blocks", "scale_file", "pretrained_checkpoint")


def architecture_of(model_config: dict) -> Architecture:
    return architectures.of_config(model_config, "the benchmark config")


def _stock_parameters(model_config: dict, architecture: Architecture) -> Mapping:
    """The constructor parameters of the stock model (or backbone) that a stock ``model_config`` names."""
    from fairchem.core.common.registry import registry

    architecture.register_stock()
    name = core_section(model_config)["model"] if model_config.get("name") == "hydra" else model_config["name"]
    return inspect.signature(registry.get_model_class(name).__init__).parameters


# ----------------------------------------------------------------------------------------------------------
# inputs


def resolve_config_path(config_path: str | Path) -> Path:
    from fairchem_prune.resources import resolve_config

    path = resolve_config(config_path)
    if not path.is_file():
        raise PruneError(f"config {config_path}: no such file")
    return path


#: file suffixes read as fairchem checkpoints (their config's model section) rather than YAML
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def _model_section(path: Path, config_path: str | Path) -> dict:
    """The ``model:`` section of a fairchem YAML (``includes`` resolved) or of a checkpoint's config."""
    from fairchem.core.common.utils import load_config

    if path.suffix in CHECKPOINT_SUFFIXES:
        from fairchem_prune.checkpoints import checkpoint_model_config, read_checkpoint

        return checkpoint_model_config(read_checkpoint(path), path)
    try:
        config = load_config(str(path))[0]
    except Exception as err:  # yaml / include errors
        raise PruneError(f"config {config_path} cannot be read ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise PruneError(f"config {config_path} has no model: section")
    return model


def load_architecture(config_path: str | Path, forces: str = "none", overrides: Sequence[str] = ()) -> dict:
    """The stock model's ``model:`` config (monolithic or hydra; a reduced config becomes its stock
    model with the source's b blocks) of a fairchem YAML (``includes`` resolved) or of a checkpoint's
    config (e.g. a converted JMP checkpoint), with the force mode and ``key=value`` overrides of the
    block-holding section (values parsed as YAML) applied."""
    import yaml

    path = resolve_config_path(config_path)
    model = _model_section(path, config_path)
    model = copy.deepcopy(model)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PruneError(f"--model-override {item!r}: expected key=value, e.g. max_neighbors=20")
        core_section(model)[key.strip()] = yaml.safe_load(value)
    where = f"config {config_path}"
    architecture = architectures.of_config(model, where)
    core = core_section(model)
    key = architecture.block_key
    if core.get("pretrained_checkpoint") is not None:
        raise PruneError(f"{where} sets pretrained_checkpoint; the benchmark builds random models from an "
                         f"architecture: give a config with {key} and the shape hyperparameters (e.g. configs/models/jmp_l.yml) "
                         "or a self-contained checkpoint (tools/slice_checkpoint.py writes one)")
    if core.get("kept_blocks") is not None:
        raise PruneError(f"{where} sets kept_blocks; give the source architecture ({key}) instead")
    for reduction_key in _REDUCTION_KEYS:
        core.pop(reduction_key, None)
    model.pop("finetune_config", None)
    model = architecture.with_core(model, core, reduced=False)  # the stock model of a reduced config
    core = core_section(model)
    if not isinstance(core.get(key), int) or core[key] < 1:
        raise PruneError(f"{where}: model needs {key} (the number of {architecture.block_kind} blocks)")
    if forces not in FORCE_MODES:
        raise PruneError(f"forces must be one of {sorted(FORCE_MODES)}, got {forces!r}")
    regress, direct = FORCE_MODES[forces]
    accepted = _stock_parameters(model, architecture)
    if regress and not direct and "direct_forces" not in accepted:
        raise PruneError(f"--forces {forces}: {architecture.label} predicts forces directly; use --forces direct or none")
    if regress is not None:
        core["regress_forces"] = regress
        if "direct_forces" in accepted:
            core["direct_forces"] = direct
    return model


check_blocks = bench_harness.check_blocks


def load_batches(data: str | Path, batch_size: int, num_batches: int, device: str) -> tuple[list, list[int]]:
    """The first ``batch_size * num_batches`` structures of a fairchem LMDB (file or folder), in order,
    collated into ``num_batches`` batches on ``device``. Returns (batches, atoms per structure)."""
    from fairchem.core.datasets import data_list_collater

    from fairchem_prune.datasets.lmdb_io import lmdb_files, open_lmdb_dataset

    if data is None:
        raise PruneError("give --data: a fairchem LMDB file or folder with the structures to run on")
    lmdb_files(data)
    try:
        dataset = open_lmdb_dataset(data)
        needed = batch_size * num_batches
        if len(dataset) < needed:
            raise PruneError(f"data {data} has {len(dataset)} structures; {num_batches} batch(es) of {batch_size} need {needed}")
        structures = [dataset[i] for i in range(needed)]
    except PruneError:
        raise
    except Exception as err:  # lmdb and pickle raise their own types for corrupt files
        raise PruneError(f"data {data} cannot be read as a fairchem LMDB ({type(err).__name__}: {err})".splitlines()[0]) from None
    batches = [
        data_list_collater(structures[i * batch_size:(i + 1) * batch_size], otf_graph=True).to(device)
        for i in range(num_batches)
    ]
    return batches, [int(s.natoms) for s in structures]


# ----------------------------------------------------------------------------------------------------------
# models


def stock_options(architecture: dict) -> list[str]:
    """Keys of the block-holding section of ``architecture`` (a :func:`load_architecture` config)
    that the stock model does not take (this plugin's options, e.g. the JMP head ``num_mlps``): the
    stock model is built without them."""
    accepted = _stock_parameters(architecture, architecture_of(architecture))
    return sorted(key for key in core_section(architecture) if key not in accepted and key not in ("name", "model"))


def build_models(architecture: dict, k: int, device: str, init: str = "fast", seed: int = 0):
    """(the reduced model keeping the first k of b blocks, the stock model with k blocks carrying the
    same weights), both in eval mode on ``device``. Options the stock model does not take
    (:func:`stock_options`) are left out of it, and so are the weights they shape."""
    from fairchem.core.common.registry import registry
    import importlib

    adapter = architecture_of(architecture)
    importlib.import_module(adapter.model_module)
    own = stock_options(architecture)
    core = core_section(architecture)
    reduced_config = adapter.with_core(architecture, {**core, "num_blocks_kept": k})
    stock_config = adapter.with_core(architecture, {**{key: v for key, v in core.items() if key not in own},
                                                    adapter.block_key: k}, reduced=False)
    context = fast_init() if init == "fast" else contextlib.nullcontext()
    torch.manual_seed(seed + k)
    with context:
        try:
            reduced = registry.get_model_class(reduced_config.pop("name"))(**reduced_config)
        except TypeError as err:
            raise PruneError(f"model config not accepted by {adapter.label}: {err}") from None
        stock = registry.get_model_class(stock_config.pop("name"))(**stock_config)
    # copied: the two models never share memory (nor caches)
    shapes = {name: value.shape for name, value in stock.state_dict().items()}
    stock.load_state_dict({name: value for name, value in reduced.state_dict().items() if shapes.get(name) == value.shape},
                          strict=not own)
    return reduced.to(device).eval(), stock.to(device).eval()


model_bytes = bench_harness.model_bytes


# ----------------------------------------------------------------------------------------------------------
# measuring


_autocast = bench_harness.autocast
_sync = bench_harness.sync


def inference_pass(model: torch.nn.Module, batches: Sequence, device: str, dtype: str) -> list[dict]:
    """One inference pass over ``batches`` (no_grad unless forces are energy gradients)."""
    outputs = []
    gradients = architectures.of_model(model).forces_are_gradients(model)
    with torch.set_grad_enabled(gradients), _autocast(device, dtype):
        for batch in batches:
            # a model differentiating w.r.t. positions may replace them in the batch: give it a copy
            out = model(batch.clone() if gradients else batch)
            outputs.append({k: v.detach() for k, v in out.items()})
    return outputs


def timed_pass(model, batches, device, dtype) -> float:
    return bench_harness.timed(lambda: inference_pass(model, batches, device, dtype), device)


def count_flops(model: torch.nn.Module, batches: Sequence, device: str = "cpu", dtype: str = "float32") -> dict:
    """FLOPs of one inference pass over ``batches``: ``{"total": int, "by_op": {aten op: int}}``."""
    return bench_harness.count_flops(lambda: inference_pass(model, batches, device, dtype))


def measure_peak_memory(model, batches, device, dtype) -> dict:
    """Peak memory of one inference pass: ``{"pass_peak_bytes", "model_bytes", "peak_bytes", "method"}``."""
    return bench_harness.measure_peak_memory(lambda: inference_pass(model, batches, device, dtype), device,
                                             model_bytes(model))


def finetune_step(model, optimizer, batch, device, dtype) -> float:
    """One fine-tuning step (forward, dummy squared loss, backward, AdamW step); seconds."""
    _sync(device)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with _autocast(device, dtype):
        out = model(batch.clone())  # as in inference_pass: a gradient-force model may replace positions
        loss = out["energy"].float().pow(2).mean()
        if "forces" in out:
            loss = loss + out["forces"].float().pow(2).mean()
    loss.backward()
    optimizer.step()
    _sync(device)
    return time.perf_counter() - start


_round_robin = bench_harness.round_robin
_median = bench_harness.median
_ratio = bench_harness.ratio


# ----------------------------------------------------------------------------------------------------------
# the benchmark


cpu_name = bench_harness.cpu_name


def environment(device: str, dtype: str) -> dict:
    import fairchem.core

    return bench_harness.environment(device, dtype, getattr(fairchem.core, "__version__", None))


def run_benchmark(
    config_path: str | Path = DEFAULT_CONFIG,
    data: str | Path | None = None,
    blocks: Sequence[int] = (6, 5, 4, 3, 2),
    batch_size: int = 4,
    device: str = "cpu",
    dtype: str = "float32",
    repeats: int = 5,
    warmup: int = 1,
    finetune_repeats: int = 3,
    num_batches: int = 1,
    forces: str = "none",
    overrides: Sequence[str] = (),
    threads: int | None = None,
    init: str = "fast",
    seed: int = 0,
    progress: bool = True,
    remeasure: int = bench_harness.REMEASURE,
) -> dict:
    """Benchmark the reduced and the stock model of the config's architecture at each block count in
    ``blocks`` (progress bars on stderr unless ``progress`` is false); flagged inference timings are measured again, every model side by side, at most
    ``remeasure`` times.

    Returns the JSON-ready result: ``{"environment", "settings", "reference_blocks", "rows": [...],
    "notes"}``, one row per block count (largest first, the reference); see :func:`format_table` and
    the README for the keys.
    """
    require_device(device)
    if dtype not in DTYPES:
        raise PruneError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    if init not in ("fast", "fairchem"):
        raise PruneError(f"init must be fast or fairchem, got {init!r}")
    for name, value, least in (("--batch-size", batch_size, 1), ("--num-batches", num_batches, 1),
                               ("--repeats", repeats, 1), ("--warmup", warmup, 0),
                               ("--finetune-repeats", finetune_repeats, 0), ("--remeasure", remeasure, 0)):
        if not isinstance(value, int) or value < least:
            raise PruneError(f"{name} must be an integer >= {least}, got {value!r}")
    if threads is not None:
        if threads < 1:
            raise PruneError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)

    architecture = load_architecture(config_path, forces, overrides)
    adapter = architecture_of(architecture)
    blocks = check_blocks(blocks, core_section(architecture)[adapter.block_key], adapter.block_kind)
    batches, natoms = load_batches(data, batch_size, num_batches, device)
    samples = len(natoms)
    notes = []
    if device == "cpu" and dtype == "bfloat16":
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        notes.append("bfloat16 on CPU runs through torch.autocast('cpu'); " + (
            "this CPU has native bf16 kernels (oneDNN)" if native else
            "this CPU has no native bf16 support: emulated, expect it slower than float32"))

    models: dict[tuple[int, str], torch.nn.Module] = {}
    for k in console.progress(blocks, desc="building models (reduced, stock)", disable=not progress):
        models[(k, "reduced")], models[(k, "stock")] = build_models(architecture, k, device, init, seed)
    names = list(models)

    rows = {k: {"blocks": k} for k in blocks}
    # 1. one analysis pass per model: FLOPs, peak memory, outputs
    outputs = {}
    for key in console.progress(names, desc="counting FLOPs and memory", unit="model", disable=not progress):
        k, kind = key
        model = models[key]
        try:
            flops = count_flops(model, batches, device, dtype)
        except RuntimeError as err:
            raise PruneError(f"the {kind} {k}-block model failed on {device}/{dtype}: {str(err).splitlines()[0]}") from None
        memory = measure_peak_memory(model, batches, device, dtype)
        torch.manual_seed(seed)  # the same random edge frames (where drawn) in the reduced and the stock pass
        outputs[key] = inference_pass(model, batches, device, dtype)
        rows[k][kind] = {
            "params": sum(p.numel() for p in model.parameters()),
            "flops": flops["total"],
            "gflops_per_sample": flops["total"] / samples / 1e9,
            "flops_by_op": flops["by_op"],
            "memory": memory,
        }
    own = stock_options(architecture)
    if own:
        stock_name = core_section(architecture).get("model", architecture["name"])
        notes.append(f"the stock {stock_name} has no {', '.join(own)}: it is built without them, so its outputs "
                     "are not compared and red/stock includes what they cost")
    for k in blocks:
        a, b = outputs[(k, "reduced")], outputs[(k, "stock")]
        rows[k]["max_abs_diff_vs_stock"] = None if own else max(
            float((x[name].float() - y[name].float()).abs().max()) for x, y in zip(a, b) for name in x
        )

    # 2. inference throughput, round-robin over all models; again while a figure is flagged
    runs = {key: (lambda model=models[key]: inference_pass(model, batches, device, dtype)) for key in names}

    def measure(attempt: int) -> dict:
        desc = f"inference, again ({attempt} of {remeasure})" if attempt else "inference"
        return bench_harness.time_round_robin(runs, 0 if attempt else warmup, repeats, device, desc, progress)

    times, flags, attempts = bench_harness.measure_until_plausible(
        measure, lambda found: inference_flags(rows, blocks, bench_harness.timing_stats(found)), remeasure,
        label=lambda key: f"{key[0]}-block {key[1]}", say=bench_harness.note if progress else lambda message: None)
    del runs
    for (k, kind), values in times.items():
        median = _median(values)
        rows[k][kind].update(pass_times_s=values, median_pass_s=median, min_pass_s=min(values),
                             spread=bench_harness.relative_spread(values), samples_per_s=samples / median,
                             flags=flags[(k, kind)])

    # 3. fine-tuning steps of the reduced models, round-robin
    for k in blocks:
        del models[(k, "stock")]
    if device == "cuda":
        torch.cuda.empty_cache()
    if finetune_repeats:
        optimizers = {}
        for k in blocks:
            model = models[(k, "reduced")].train()
            optimizers[k] = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.95), weight_decay=0.1)
        steps = {k: [] for k in blocks}
        rounds = max(warmup, 1) + finetune_repeats  # the first step allocates AdamW's state: never timed
        with console.progress(total=rounds * len(blocks), desc="fine-tuning steps", unit="step", disable=not progress) as shown:
            for r in range(rounds):
                for k in _round_robin(blocks, r):
                    elapsed = finetune_step(models[(k, "reduced")], optimizers[k], batches[0], device, dtype)
                    if r >= max(warmup, 1):
                        steps[k].append(elapsed)
                    shown.update()
        for k in blocks:
            rows[k]["finetune_step_times_s"] = steps[k]
            rows[k]["finetune_step_s"] = _median(steps[k])
        del optimizers
    else:
        for k in blocks:
            rows[k]["finetune_step_times_s"], rows[k]["finetune_step_s"] = [], None

    # 4. ratios to the reference (the largest block count)
    ref = rows[blocks[0]]
    for k in blocks:
        row = rows[k]
        red, stock = row["reduced"], row["stock"]
        row["params"] = red["params"]
        row["params_pct"] = 100.0 * red["params"] / ref["reduced"]["params"]
        row["gflops_per_sample"] = red["gflops_per_sample"]
        row["flop_bound_speedup"] = ref["reduced"]["flops"] / red["flops"]
        row["samples_per_s"] = red["samples_per_s"]
        row["measured_speedup"] = red["samples_per_s"] / ref["reduced"]["samples_per_s"]
        row["measured_over_bound"] = row["measured_speedup"] / row["flop_bound_speedup"]
        row["reduced_over_stock"] = red["samples_per_s"] / stock["samples_per_s"]
        row["peak_memory_mb"] = red["memory"]["peak_bytes"] / 2**20
        row["finetune_speedup"] = _ratio(ref["finetune_step_s"], row["finetune_step_s"])
        row["spread"], row["flags"] = red["spread"], red["flags"]

    reference = models[(blocks[0], "reduced")]
    regress_forces = bool(getattr(architectures.core_of(reference), "regress_forces", True))
    settings = {
        "family": adapter.label, "config": str(config_path), "data": str(data), "blocks": blocks, "batch_size": batch_size,
        "num_batches": num_batches, "samples": samples, "atoms_per_sample_mean": sum(natoms) / samples,
        "device": device, "dtype": dtype, "repeats": repeats, "warmup": warmup,
        "finetune_repeats": finetune_repeats, "forces": forces,
        "regress_forces": regress_forces,
        "direct_forces": regress_forces and not adapter.forces_are_gradients(reference),
        "overrides": list(overrides), "init": init, "seed": seed,
        "architecture": {k: v for k, v in architecture.items()},
    }
    return {
        "environment": environment(device, dtype),
        "settings": settings,
        "reference_blocks": blocks[0],
        "rows": [rows[k] for k in blocks],
        "timing": {"spread_limit": bench_harness.SPREAD_LIMIT, "remeasure": remeasure, "attempts": attempts},
        "notes": notes,
    }


def inference_flags(rows: dict, blocks: Sequence[int], stats: Mapping) -> dict:
    """``{(k, kind): [flags]}`` of the inference timings ``stats`` (:func:`bench_harness.timing_stats`):
    each kind (reduced, stock) on its own (:func:`bench_harness.plausibility_flags`, FLOP bounds from
    ``rows``), and reduced against stock where their FLOPs are equal (on both)."""
    flags = {}
    for kind in ("reduced", "stock"):
        entries = [{"blocks": k, **stats[(k, kind)],
                    "flop_bound_speedup": _ratio(rows[blocks[0]][kind]["flops"], rows[k][kind]["flops"])} for k in blocks]
        flags.update({(k, kind): found for k, found in zip(blocks, bench_harness.plausibility_flags(entries))})
    for k in blocks:
        if rows[k]["reduced"]["flops"] == rows[k]["stock"]["flops"]:
            pair = bench_harness.equal_work_flags(stats[(k, "reduced")], stats[(k, "stock")], "reduced/stock")
            flags[(k, "reduced")] += pair
            flags[(k, "stock")] += pair
    return flags


# ----------------------------------------------------------------------------------------------------------
# output


_fmt = bench_harness.fmt


def format_table(result: dict) -> str:
    """The result as a text table, ratios relative to the reference (largest) block count."""
    env, settings = result["environment"], result["settings"]
    ref = result["reference_blocks"]
    header = (
        f"{settings['family']} block reduction benchmark: {settings['config']} (forces: {settings['forces']}), "
        f"{settings['samples']} structures of {settings['data']} (mean {settings['atoms_per_sample_mean']:.1f} atoms) "
        f"in batches of {settings['batch_size']}\n"
        f"device {env['device']} ({env['device_name']}), {env['threads']} torch threads, {settings['dtype']}, "
        f"torch {env['torch']}; median of {settings['repeats']} passes after {settings['warmup']} warm-up, "
        f"{settings['finetune_repeats']} fine-tuning steps; ratios to {ref} blocks"
    )
    attempts = len(result.get("timing", {}).get("attempts", [])) or 1
    if attempts > 1:
        header += f"; timed {attempts} times (flagged timings measured again)"
    if any(row["flags"] or row["stock"]["flags"] for row in result["rows"]):
        header += f"\n{bench_harness.FLAG_LEGEND}"
    columns = [
        ("blocks", ">6"), ("params", ">9"), ("params%", ">7"), ("GFLOP/smp", ">9"), ("bound x", ">7"),
        ("smp/s", ">8"), ("meas. x", ">7"), ("spread", ">6"), ("meas/bnd", ">8"), ("red/stock", ">9"),
        ("peak MB", ">8"), ("ft step s", ">9"), ("ft x", ">5"),
    ]
    cells = []
    for row in result["rows"]:
        mark = bench_harness.FLAG_MARK if row["flags"] else ""
        cells.append([
            str(row["blocks"]), bench_harness.format_count(row["params"]), f"{row['params_pct']:.1f}",
            f"{row['gflops_per_sample']:.3f}", f"{row['flop_bound_speedup']:.3f}", f"{row['samples_per_s']:.3g}{mark}",
            f"{row['measured_speedup']:.3f}{mark}", f"{100 * row['spread']:.0f}%", f"{100 * row['measured_over_bound']:.1f}%",
            f"{row['reduced_over_stock']:.3f}{bench_harness.FLAG_MARK if row['stock']['flags'] else ''}",
            f"{row['peak_memory_mb']:.1f}", _fmt(row["finetune_step_s"], ".3g"), _fmt(row["finetune_speedup"], ".2f"),
        ])
    lines = [header, *bench_harness.table_lines(columns, cells)]
    for row in result["rows"]:  # reduced/stock flags are on both: said once
        lines += bench_harness.flag_lines([(f"{row['blocks']} blocks", row["flags"]),
                                           (f"{row['blocks']} blocks, stock", [f for f in row["stock"]["flags"] if f not in row["flags"]])])
    lines += [f"note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)


write_result = bench_harness.write_result
