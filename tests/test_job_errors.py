"""A PruneError raised in the stock ``fairchem`` command's local ranks (``--num-gpus 2`` on CPU) or in a
submitit job (what ``--submit`` runs on Slurm, here under submitit's local executor) is one ``error:``
line, as in the command's own process (tests/test_registration.py): no rank's or task's traceback."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairchem_prune.job_errors import user_message

REPO = Path(__file__).parents[1]
FAIRCHEM = Path(sys.executable).parent / "fairchem"
#: a shipped config with a training split that does not exist: the trainer raises PruneError when it loads data
CONFIG = REPO / "configs" / "finetune" / "rmd17_aspirin_2b.yml"
MISSING = "error: dataset.train.src /nonexistent: no such file or folder; give the data with --dataset.train.src=PATH"


def test_a_prune_error_of_the_ranks_is_one_line_of_the_command(tmp_path):
    result = subprocess.run(
        [str(FAIRCHEM), "--mode", "train", "--config-yml", str(CONFIG), "--cpu", "--num-gpus", "2",
         "--run-dir", str(tmp_path), "--dataset.train.src=/nonexistent"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == MISSING
    assert result.stderr.count(MISSING) == 1  # once, not per rank
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr


def test_a_prune_error_in_a_submitit_job_is_one_line_of_its_log(tmp_path):
    import submitit
    from fairchem.core._cli import Runner
    from fairchem.core.common.flags import flags
    from fairchem.core.common.utils import build_config

    command = ["--mode", "train", "--config-yml", str(CONFIG), "--cpu", "--run-dir", str(tmp_path),
               "--dataset.train.src=/nonexistent"]
    args, rest = flags.get_parser().parse_known_args(command)
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=5)
    job = executor.submit(Runner(), build_config(args, rest))
    deadline = time.time() + 300
    while not job.done():
        assert time.time() < deadline, job.stderr()
        time.sleep(0.2)
    log = job.stderr()
    assert log.strip().splitlines()[-1] == MISSING and "Traceback" not in log, log[-3000:]
    assert not job.paths.result_pickle.exists()  # the task exited (status 2) before submitit recorded a result


def test_a_child_failure_is_ours_only_when_every_failed_rank_raised_a_prune_error(tmp_path):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def failure(rank: int, message: str) -> ProcessFailure:
        path = tmp_path / f"{rank}.json"
        extra = {"py_callstack": "", "timestamp": "0"}
        path.write_text(json.dumps({"message": {"message": message, "extraInfo": extra}}))
        return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=1, error_file=str(path))

    ours, same = (failure(rank, "PruneError: the data is wrong; fix it") for rank in (0, 1))
    assert user_message(ChildFailedError("runner_wrapper", {0: ours, 1: same})) == "the data is wrong; fix it"
    assert user_message(ChildFailedError("runner_wrapper", {0: ours, 1: failure(1, "ValueError: not ours")})) is None
    assert user_message(ValueError("PruneError: not ours")) is None


@pytest.fixture(autouse=True)
def _one_thread_env(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the submitit job inherits it
