"""Exact resumption after preemption. fairchem numbers a training step before running it
(``self.step`` = k while step k runs), changes the state of step k in two places (the optimizer and
EMA in ``_backward``, the LR schedule at the end of the step, after logging, ``checkpoint_every``
saves and validation), and a preemption signal (Slurm's USR2, handled by submitit) saves
``checkpoint.pt`` wherever the running step happens to be. Here every training-state checkpoint is
one of the uninterrupted run's states:

- it records the last completed step, so a run stopped before step k's update repeats step k on
  its batch;
- the signal waits while the optimizer and EMA change the weights (``_backward``), so no checkpoint
  holds half an update;
- a checkpoint saved after step k's update and before its LR step takes that LR step itself (the
  step's own call is then skipped), so the resumed schedule is not one step behind.

A ``ReduceLROnPlateau`` schedule steps on validation metrics and is saved as it is."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: the signal submitit checkpoints and requeues on
PREEMPTION_SIGNAL = signal.SIGUSR2


@contextmanager
def preemption_held() -> Iterator[None]:
    """Delay a preemption signal that arrives inside the block to its end (main thread only)."""
    handler = signal.getsignal(PREEMPTION_SIGNAL)
    if not callable(handler) or threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[tuple] = []
    signal.signal(PREEMPTION_SIGNAL, lambda *received: arrived.append(received))
    try:
        yield
    finally:
        signal.signal(PREEMPTION_SIGNAL, handler)
        if arrived:
            handler(*arrived[0])


class ResumesAtCompletedStep:
    """Mixin for fairchem trainers (before ``OCPTrainer`` in the bases)."""

    def load_extras(self) -> None:
        super().load_extras()
        self._lr_step, self._lr_stepped_at = self.scheduler.step, None
        self.scheduler.step = self._lr_step_once

    def _lr_step_once(self, *args, **kwargs) -> None:
        """fairchem's ``scheduler.step``, at most once per training step."""
        if self._lr_stepped_at != self.step:
            self._lr_step(*args, **kwargs)
        self._lr_stepped_at = self.step

    def load_checkpoint(self, *args, **kwargs):
        result = super().load_checkpoint(*args, **kwargs)
        self._completed_step = self._lr_stepped_at = self.step
        return result

    def _backward(self, loss) -> None:
        with preemption_held():
            super()._backward(loss)  # gradients, optimizer step, EMA
            self._completed_step = self.step

    def save(self, *args, **kwargs):
        running = self.step
        completed = min(running, getattr(self, "_completed_step", 0))
        training_state = kwargs.get("training_state", args[2] if len(args) > 2 else True)
        if training_state and completed == running and self.scheduler.scheduler_type != "ReduceLROnPlateau":
            self.scheduler.step()  # this step's LR step, taken before it is saved
        self.step = completed
        try:
            return super().save(*args, **kwargs)
        finally:
            self.step = running
