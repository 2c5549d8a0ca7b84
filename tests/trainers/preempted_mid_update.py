"""Train with the fairchem command line in argv[2:] and preempt the run as submitit does (USR2: save
checkpoint.pt with the training state, exit), the signal raised right after the optimizer update of
step argv[1], inside fairchem's ``_backward``.

    python preempted_mid_update.py 4 --mode train --config-yml ... """

import os
import signal
import sys

import torch

from fairchem_prune.fairchem_runs import build_trainer


def main(preempt_at: int, args: list[str]) -> None:
    trainer = build_trainer(args)

    def preempted(signum, frame):
        trainer.save(checkpoint_file="checkpoint.pt", training_state=True)
        sys.exit(0)

    signal.signal(signal.SIGUSR2, preempted)
    update = trainer.optimizer.step

    def update_then_signal(*a, **k):
        result = update(*a, **k)
        if trainer.step == preempt_at:
            os.kill(os.getpid(), signal.SIGUSR2)
        return result

    trainer.optimizer.step = update_then_signal
    torch.set_num_threads(1)
    trainer.train()
    raise SystemExit(f"the run was not preempted at step {preempt_at}")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
