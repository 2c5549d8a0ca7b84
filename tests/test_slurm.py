"""The stock ``fairchem ... --submit --cpu`` through a real Slurm (``.ci/slurm.sh``; marker ``slurm``):
distillation trains to the end and its student loads in ``OCPCalculator``; a job preempted for real
(``scancel --signal=USR2``) checkpoints, is requeued, resumes and finishes with the losses of an
uninterrupted run, with 1 and with 2 gloo ranks; a fine-tuning run of a shipped config and the ablation
tool's ``--submit`` run through sbatch; ``compress --submit`` follows its jobs to the final checkpoint."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_GEMNET, build_perturbed, fairchem, molecule_atoms, tiny_config, write_checkpoint, write_task

pytestmark = pytest.mark.slurm

REPO = Path(__file__).parents[1]
FAIRCHEM = Path(sys.executable).parent / "fairchem"
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
#: what a CPU-only node takes: 1 hour (submitit counts a USR2 below ~50 min as a timeout), 2 GB
SUBMIT = ["--cpu", "--submit", "--slurm-mem", "2", "--slurm-timeout", "1"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    import fairchem_prune.models.gemnet_oc_reduced  # noqa: F401  (registers gemnet_oc)

    model = {**TINY_GEMNET, "name": "gemnet_oc", "num_blocks": 4}
    path = tmp_path_factory.mktemp("slurm_teacher") / "teacher.pt"
    write_checkpoint(path, build_perturbed(model, seed=4), model)
    return path


def distill(teacher, emt_lmdb, run_dir, run_id, *extra) -> list:
    return ["--mode", "train", "--config-yml", REPO / "configs" / "s2ef" / "distill_2b.yml", "--run-dir", run_dir,
            "--timestamp-id", run_id, "--identifier", run_id, "--print-every", "1",
            f"--task.distill.teacher_checkpoint={teacher}", f"--dataset.train.src={emt_lmdb['train']}",
            f"--dataset.val.src={emt_lmdb['val']}", "--task.distill.max_samples=None", *extra]


def submit(args, cwd) -> str:
    """Run the stock command with ``--submit``; the Slurm job id it printed."""
    result = subprocess.run([str(FAIRCHEM), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return re.findall(r"Submitted jobs: (\S+)", result.stdout + result.stderr)[-1]


def states(job: str) -> set[str]:
    out = subprocess.run(["squeue", "--states=all", "-h", "-r", "-o", "%T", "-j", job], capture_output=True, text=True)
    return set(out.stdout.split())


def wait(job: str, logdir: Path, timeout: float = 600, until=None) -> str:
    """Poll until ``job`` ends (or ``until(log)`` holds); the text of its logs."""
    deadline = time.time() + timeout
    while True:
        log = "".join(p.read_text(errors="replace") for p in sorted(logdir.rglob("*_log.*")))
        current = states(job)
        if until is not None and until(log):
            return log
        if until is None and current and current <= DONE:
            assert current == {"COMPLETED"}, (current, log[-3000:])
            return log
        assert time.time() < deadline, (current, log[-3000:])
        time.sleep(0.5)


def scalars(run_dir: Path, run_id: str, tag: str) -> dict[int, float]:
    """step -> the last value fairchem's tensorboard logger wrote for ``train/<tag>`` (a resumed run's)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "logs" / "tensorboard" / run_id))
    events.Reload()
    return {e.step: e.value for e in sorted(events.Scalars(f"train/{tag}"), key=lambda e: e.wall_time)}


def test_distillation_trains_through_sbatch_and_the_student_loads(teacher, emt_lmdb, tmp_path):
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator

    job = submit([*distill(teacher, emt_lmdb, tmp_path, "kd", "--task.distill.max_samples=48", "--optim.eval_every=6"), *SUBMIT,
                  "--logdir", tmp_path / "slurm"], tmp_path)
    log = wait(job, tmp_path / "slurm")
    assert "step: 6.00e+00" in log and "Traceback" not in log
    script = next((tmp_path / "slurm").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --gpus-per-node=0" in script  # what --submit --cpu asks for
    atoms = molecule_atoms()
    atoms.calc = OCPCalculator(checkpoint_path=str(tmp_path / "checkpoints" / "kd" / "checkpoint.pt"), cpu=True, seed=0)
    assert np.isfinite(atoms.get_forces()).all() and atoms.get_forces().shape == (len(atoms), 3)


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_preempted_job_resumes_with_the_uninterrupted_losses(teacher, emt_lmdb, tmp_path, ranks):
    """10 epochs of 3 steps (24 slabs, 8 per step and over all ranks); USR2 as Slurm sends it at
    preemption after step 3: checkpoint.pt, requeue, resume after the saved step, 30 steps in all, every
    step's losses equal to an uninterrupted local run's (rtol 1e-4)."""
    import torch

    common = ["--optim.max_epochs=10", "--optim.eval_every=30", f"--optim.batch_size={8 // ranks}", "--num-gpus",
              str(ranks)]
    job = submit([*distill(teacher, emt_lmdb, tmp_path, "sub", *common), *SUBMIT, "--logdir", tmp_path / "slurm"],
                 tmp_path)
    wait(job, tmp_path / "slurm", until=lambda log: "step: 3.00e+00" in log)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    log = wait(job, tmp_path / "slurm")
    assert "Checkpointing callback is triggered" in log
    saved = torch.load(tmp_path / "checkpoints" / "sub" / "checkpoint.pt", weights_only=False)["step"]
    assert saved == 30  # the finished run's last checkpoint
    steps = [float(v) for v in re.findall(r"ocp_trainer\.py:\d+: \(INFO\): .*?step: ([0-9.e+-]+)", log)]
    assert steps.count(1.0) == 1 and steps[-1] == 30 and sorted(set(steps)) == [float(s) for s in range(1, 31)]
    fairchem(*distill(teacher, emt_lmdb, tmp_path, "whole", *common, "--cpu"), cwd=tmp_path)
    for tag in ("distill_loss", "distill_forces", "distill_n2n"):
        resumed, whole = scalars(tmp_path, "sub", tag), scalars(tmp_path, "whole", tag)
        assert sorted(resumed) == sorted(whole) == list(range(1, 31))
        np.testing.assert_allclose([resumed[s] for s in whole], list(whole.values()), rtol=1e-4, err_msg=tag)


def test_finetuning_and_the_ablation_tool_submit_through_sbatch(tmp_path, emt_lmdb):
    """configs/finetune/demo_s2ef_4b.yml from a 4-block GemNet-OC, then tools/ablate_blocks.py --submit on
    a 2-block one (one job per removed block), each to its best checkpoint."""
    for blocks in (4, 2):
        config = {"name": "gemnet_oc", **tiny_config(num_blocks=blocks)}
        write_checkpoint(tmp_path / f"pre{blocks}.pt", build_perturbed(config), config)
    data = [f"--dataset.train.src={emt_lmdb['train']}", f"--dataset.val.src={emt_lmdb['val']}", "--optim.max_epochs=1",
            "--optim.batch_size=8"]
    finetune = REPO / "configs" / "finetune" / "demo_s2ef_4b.yml"
    job = submit(["--mode", "train", "--config-yml", finetune, "--run-dir", tmp_path / "ft", "--timestamp-id", "ft",
                  f"--model.pretrained_checkpoint={tmp_path / 'pre4.pt'}", *data, *SUBMIT, "--logdir", tmp_path / "ft_slurm"],
                 tmp_path)
    wait(job, tmp_path / "ft_slurm")
    assert (tmp_path / "ft" / "checkpoints" / "ft" / "best_checkpoint.pt").is_file()

    tool = subprocess.run([sys.executable, str(REPO / "tools" / "ablate_blocks.py"), "--config", str(finetune),
                           "--pretrained", str(tmp_path / "pre2.pt"), "--out", str(tmp_path / "abl"), "--submit", "--",
                           *data, *map(str, SUBMIT[:1] + SUBMIT[2:])], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert tool.returncode == 0, tool.stdout[-2000:] + tool.stderr[-3000:]
    logs = "".join((tmp_path / "abl" / "logs" / f"remove_{b}.log").read_text() for b in ("f2", "f3"))
    jobs = re.findall(r"Submitted jobs: (\S+)", logs)
    assert len(jobs) == 2, logs[-3000:]
    for job in jobs:
        wait(job, tmp_path / "abl" / "runs" / "slurm")
    summary = subprocess.run([sys.executable, str(REPO / "tools" / "ablate_blocks.py"), "--summarize", str(tmp_path / "abl")],
                             capture_output=True, text=True)
    assert summary.returncode == 0, summary.stderr[-2000:]
    runs = json.loads((tmp_path / "abl" / "ablation.json").read_text())["runs"]
    assert [r["removed"] for r in runs] == ["f_2", "f_3"] and all(r["metrics"] for r in runs)


def test_compress_submits_its_runs_and_follows_them_to_the_final_checkpoint(tmp_path, emt_lmdb):
    """Candidates as Slurm jobs, a re-run that sees them finish, picks and submits the final fine-tune, and
    one more that exports it; the same pick as the budget rule on the recorded errors."""
    config = {"name": "gemnet_oc", **tiny_config(num_blocks=2)}
    write_checkpoint(tmp_path / "pre.pt", build_perturbed(config), config)
    args = [sys.executable, str(REPO / "tools" / "compress.py"), "--checkpoint", tmp_path / "pre.pt", "--task",
            write_task(tmp_path / "task.yml"), "--train", emt_lmdb["train"], "--val", emt_lmdb["val"], "--epochs", "1",
            "--final-epochs", "1", "--order", "last", "--budget", "1000%", "--out", tmp_path / "out", "--submit", "--",
            *SUBMIT[2:]]
    said = []
    for _ in range(4):
        run = subprocess.run(list(map(str, args)), capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        said.append(run.stdout)
        if "[compress] done:" in run.stdout:
            break
        for job in re.findall(r"submitted \(Slurm job (\S+);", run.stdout):
            wait(job, tmp_path / "out" / "runs" / "slurm")
    assert [len(re.findall("submitted", s)) for s in said] == [2, 1, 0], said
    assert "full_2b: Slurm job" in said[1] and "finished" in said[1] and "pick: br_1b" in said[1]
    result = json.loads((tmp_path / "out" / "compress.json").read_text())
    assert result["pick"] == "br_1b" and Path(result["final"]["checkpoint"]).is_file()
