"""Exact resumption after preemption. fairchem numbers a training step before running it
(``self.step`` = k while step k runs), and a preemption signal (Slurm's USR2, handled by submitit)
saves ``checkpoint.pt`` from within the running step: the checkpoint says k while the weights,
optimizer and schedule are those after step k-1, and the resumed run skips step k's batch. Here a
checkpoint records the last completed step, so the resumed run repeats step k on its batch and goes
on as the uninterrupted run does."""

from __future__ import annotations


class ResumesAtCompletedStep:
    """Mixin for fairchem trainers (before ``OCPTrainer`` in the bases)."""

    def load_checkpoint(self, *args, **kwargs):
        result = super().load_checkpoint(*args, **kwargs)
        self._completed_step = self.step
        return result

    def _backward(self, loss) -> None:
        super()._backward(loss)  # gradients, optimizer step, EMA: the step's last change of state
        self._completed_step = self.step

    def save(self, *args, **kwargs):
        running, self.step = self.step, min(self.step, getattr(self, "_completed_step", 0))
        try:
            return super().save(*args, **kwargs)
        finally:
            self.step = running
