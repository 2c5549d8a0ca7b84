"""The distill trainer through the stock fairchem command: losses, budget, DDP, resume, errors."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_GEMNET, fairchem
from distill_helpers import build_trainer as build_trainer_from, distil_sliced_student, distill_command, logged, train_teacher

from fairchem_prune.errors import PruneError

TEACHER_MODEL = {**TINY_GEMNET, "name": "gemnet_oc", "num_blocks": 4}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, emt_lmdb):
    """A tiny 4-block GemNet-OC trained for 20 epochs on the EMT slabs with the stock trainer."""
    return train_teacher(tmp_path_factory.mktemp("teacher"), TEACHER_MODEL, emt_lmdb, lr=0.003)


def distill_args(teacher, emt_lmdb, run_dir, run_id, *extra):
    return distill_command("distill_2b.yml", teacher, emt_lmdb, run_dir, run_id, *extra)


def test_student_keeping_every_block_has_zero_distillation_terms(teacher, emt_lmdb, tmp_path):
    log = fairchem(*distill_args(teacher, emt_lmdb, tmp_path, "all", "--model.num_blocks_kept=4",
                                 "--task.distill.energy_weight=1", "--task.distill.max_samples=8"), cwd=tmp_path)
    # step 1, before any update: student == teacher up to float32 summation order (terms are ~1e-2
    # as soon as a block is removed, see the next test)
    for term in ("distill_forces", "distill_energy", "distill_n2n", "distill_e2e", "distill_loss", "teacher_forces_mae"):
        assert logged(log, term)[0] < 1e-7, term


def test_distillation_recovers_accuracy_lost_by_slicing(teacher, emt_lmdb, tmp_path):
    teacher_bytes = teacher.read_bytes()
    log, distilled, mae = distil_sliced_student("distill_2b.yml", teacher, emt_lmdb, tmp_path, num_blocks_kept=2)
    assert len(logged(log, "distill_loss")) == 30  # 240 structures / batch 8, one epoch
    losses = logged(log, "distill_loss")
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert mae["distilled"] < mae["sliced"]
    assert teacher.read_bytes() == teacher_bytes
    # the checkpoint is an ordinary gemnet_oc_reduced one: no teacher, no distill section
    checkpoint = torch.load(distilled, weights_only=False)
    assert checkpoint["config"]["model"]["name"] == "gemnet_oc_reduced"
    assert "pretrained_checkpoint" not in checkpoint["config"]["model"] and "distill" not in checkpoint["config"]["task"]
    assert not any(k.startswith("teacher") for k in checkpoint["state_dict"])


def build_trainer(tmp_path, teacher, emt_lmdb, *overrides):
    """Construct the trainer in this process as fairchem's runner does (no training)."""
    return build_trainer_from(distill_args(teacher, emt_lmdb, tmp_path, "x", *overrides))


def test_teacher_is_frozen_and_outside_the_optimizer(teacher, emt_lmdb, tmp_path):
    trainer = build_trainer(tmp_path, teacher, emt_lmdb)
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised or p.requires_grad for p in trainer.teacher.parameters())
    assert not trainer.teacher.training
    assert trainer.normalizers["forces"].rmsd == torch.load(teacher, weights_only=False)["normalizers"]["forces"]["rmsd"]


def write_schnet_checkpoint(path):
    torch.save({"config": {"model": {"name": "schnet"}}, "state_dict": {}}, path)


@pytest.mark.parametrize(
    "case, overrides, message",
    [
        ("missing teacher", ["--task.distill.teacher_checkpoint={tmp}/none.pt"], "none.pt: no such file"),
        ("other architecture", ["--task.distill.teacher_checkpoint={tmp}/schnet.pt"], "holds a 'schnet' model"),
        ("more blocks", ["--model.num_blocks_kept=5"], "cannot keep 5 blocks: the source model has 4"),
        ("zero weights", ["--task.distill.force_weight=0", "--task.distill.n2n_weight=0", "--task.distill.e2e_weight=0"],
         "all loss weights"),
        ("typo", ["--task.distill.froce_weight=1"], "unknown keys ['froce_weight']"),
    ],
)
def test_bad_configuration_fails_before_training(teacher, emt_lmdb, tmp_path, case, overrides, message):
    write_schnet_checkpoint(tmp_path / "schnet.pt")
    with pytest.raises(PruneError) as error:
        build_trainer(tmp_path, teacher, emt_lmdb, *[o.format(tmp=tmp_path) for o in overrides])
    assert message in str(error.value), case
    assert not (tmp_path / "checkpoints" / "x" / "checkpoint.pt").exists()


def tensorboard_scalars(run_dir: Path, run_id: str, tag: str) -> list[float]:
    """Full-precision per-step values that fairchem's tensorboard logger wrote for ``tag``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "logs" / "tensorboard" / run_id))
    events.Reload()
    return [e.value for e in events.Scalars(f"train/{tag}")]


def test_two_cpu_ranks_match_one_rank_with_the_doubled_batch(teacher, emt_lmdb, tmp_path):
    budget = ["--task.distill.max_samples=48", "--optim.eval_every=100"]
    fairchem(*distill_args(teacher, emt_lmdb, tmp_path, "ddp2", *budget, "--num-gpus", "2", "--optim.batch_size=4"), cwd=tmp_path)
    fairchem(*distill_args(teacher, emt_lmdb, tmp_path, "ddp1", *budget, "--optim.batch_size=8"), cwd=tmp_path)
    for tag in ("distill_loss", "distill_forces", "distill_n2n", "distill_e2e"):
        two, one = tensorboard_scalars(tmp_path, "ddp2", tag), tensorboard_scalars(tmp_path, "ddp1", tag)
        assert len(one) == 6 and len(set(np.round(one, 6))) == 6  # six distinct steps
        np.testing.assert_allclose(two, one, rtol=1e-4, err_msg=tag)


#: an LR halved every step: a resumed schedule one step off changes the losses by far more than rtol
STEEP_LR = ["--optim.scheduler=StepLR", "--optim.step_size=1", "--optim.gamma=0.5"]


def test_resumed_run_repeats_the_uninterrupted_losses(teacher, emt_lmdb, tmp_path):
    """Epoch-balanced sampling, no sample budget: 2 epochs at once vs a run stopped after 1 epoch,
    whose last checkpoint is mid-epoch (step 2 of 3, saved before fairchem's LR step of that step),
    resumed with --checkpoint."""
    common = ["--task.distill.max_samples=None", "--optim.eval_every=100", "--optim.checkpoint_every=2", *STEEP_LR]
    fairchem(*distill_args(teacher, emt_lmdb, tmp_path, "whole", *common, "--optim.max_epochs=2"), cwd=tmp_path)
    fairchem(*distill_args(teacher, emt_lmdb, tmp_path, "part", *common, "--optim.max_epochs=1"), cwd=tmp_path)
    checkpoint = tmp_path / "checkpoints" / "part" / "checkpoint.pt"
    assert torch.load(checkpoint, weights_only=False)["step"] == 2
    fairchem(*distill_args(teacher, emt_lmdb, tmp_path, "resumed", *common, "--optim.max_epochs=2",
                           "--checkpoint", checkpoint), cwd=tmp_path)
    whole = tensorboard_scalars(tmp_path, "whole", "distill_loss")
    resumed = tensorboard_scalars(tmp_path, "resumed", "distill_loss")
    assert len(whole) == 6 and len(resumed) == 4  # 24 structures / batch 8 = 3 steps per epoch; steps 3-6
    np.testing.assert_allclose(resumed, whole[2:], rtol=1e-4)


def test_a_preemption_inside_the_update_waits_for_its_end(teacher, emt_lmdb, tmp_path):
    """USR2 raised right after step 4's optimizer update (inside fairchem's ``_backward``): the checkpoint
    holds the whole of step 4, its LR step included, and the resumed run's steps 5-6 repeat the
    uninterrupted run's."""
    import subprocess
    import sys

    common = ["--task.distill.max_samples=None", "--optim.eval_every=100", "--optim.max_epochs=2", *STEEP_LR]
    fairchem(*distill_args(teacher, emt_lmdb, tmp_path, "whole", *common), cwd=tmp_path)
    script = Path(__file__).with_name("preempted_mid_update.py")
    preempted = subprocess.run([sys.executable, str(script), "4", *map(str, distill_args(
        teacher, emt_lmdb, tmp_path, "part", *common))], capture_output=True, text=True, cwd=tmp_path)
    assert preempted.returncode == 0, preempted.stderr[-3000:]
    checkpoint = tmp_path / "checkpoints" / "part" / "checkpoint.pt"
    assert torch.load(checkpoint, weights_only=False)["step"] == 4
    fairchem(*distill_args(teacher, emt_lmdb, tmp_path, "resumed", *common, "--checkpoint", checkpoint), cwd=tmp_path)
    whole = tensorboard_scalars(tmp_path, "whole", "distill_loss")
    resumed = tensorboard_scalars(tmp_path, "resumed", "distill_loss")
    assert len(whole) == 6 and len(resumed) == 2
    np.testing.assert_allclose(resumed, whole[4:], rtol=1e-4)


def test_preempted_submitit_job_checkpoints_requeues_and_finishes(teacher, emt_lmdb, tmp_path):
    """fairchem's Runner (what --submit sends to SLURM) under submitit's local executor: a
    preemption signal mid-run makes it save checkpoint.pt and requeue; the requeued job resumes
    from that step and completes the budget."""
    import signal
    import time

    import submitit
    from fairchem.core._cli import Runner
    from fairchem.core.common.flags import flags
    from fairchem.core.common.utils import build_config

    args, rest = flags.get_parser().parse_known_args([str(a) for a in distill_args(
        teacher, emt_lmdb, tmp_path, "sub", "--task.distill.max_samples=None", "--optim.max_epochs=10",
        "--optim.eval_every=1000")])
    config = build_config(args, rest)
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=15)
    job = executor.submit(Runner(), config)
    checkpoint = tmp_path / "checkpoints" / "sub" / "checkpoint.pt"
    deadline = time.time() + 900  # generous: a loaded CI machine is slow
    while "step: 3.00e+00" not in (job.stdout() or ""):  # let it train a few steps
        assert time.time() < deadline and not job.done(), job.stderr()
        time.sleep(0.2)
    # preemption as SLURM signals it: USR2 to the task (submitit's local controller does not forward it)
    import psutil

    for task in psutil.Process(job._process.pid).children(recursive=True):
        task.send_signal(signal.SIGUSR2)
    while not job.paths.result_pickle.exists():  # the job is requeued in place, then finishes
        assert time.time() < deadline, job.stderr()
        time.sleep(0.5)
    job.result()  # raises if the requeued job failed
    log = job.stdout() + job.stderr()
    assert "Checkpointing callback is triggered" in log and "Requeued job" in log
    preempted_at = torch.load(checkpoint, weights_only=False)["step"]  # written by the preemption
    assert 3 <= preempted_at < 30
    steps = [float(v) for v in re.findall(r"ocp_trainer\.py:\d+: \(INFO\): .*?step: ([0-9.e+-]+)", log)]
    assert steps[-1] == 30  # 10 epochs x 3 steps, completed after the requeue ...
    assert steps.count(1.0) == 1 and preempted_at + 1 in steps  # ... resumed after the saved step, not restarted
