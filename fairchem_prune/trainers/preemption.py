"""Exact resumption after preemption. fairchem numbers a training step before running it
(``self.step`` = k while step k runs), changes the state of step k in two places (the optimizer and
EMA in ``_backward``; the LR schedule at the end of the step, after logging, ``checkpoint_every``
saves and validation), and a preemption signal (Slurm's USR2, handled by submitit) saves
``checkpoint.pt`` wherever the running step happens to be. Here every training-state checkpoint is
one of the uninterrupted run's states:

- it records the last completed step, so a run stopped before step k's update repeats step k on
  its batch;
- a signal that arrives once step k's update has begun waits until the step has logged and taken
  its LR step (or until its validation starts, or the next step does, whichever comes first), so no
  checkpoint holds half an update and the step's log line is not lost;
- a checkpoint saved after step k's update and before its LR step (``checkpoint_every``, a signal
  during validation) takes that LR step itself, and the step's own call is then skipped, so the
  resumed schedule is not one step behind.

A ``ReduceLROnPlateau`` schedule steps on validation metrics and is saved as it is."""

from __future__ import annotations

import signal
import threading
import weakref

#: the signal submitit checkpoints and requeues on
PREEMPTION_SIGNAL = signal.SIGUSR2


class PreemptionHold:
    """Delays the preemption signal from :meth:`hold` to :meth:`release` (main thread only; a signal
    that arrived meanwhile is handled by the handler that was installed, once)."""

    def __init__(self) -> None:
        self._handler, self._arrived = None, []

    def hold(self) -> None:
        handler = signal.getsignal(PREEMPTION_SIGNAL)
        if self._handler is not None or not callable(handler) or threading.current_thread() is not threading.main_thread():
            return
        self._handler, self._arrived = handler, []
        signal.signal(PREEMPTION_SIGNAL, lambda *received: self._arrived.append(received))

    def release(self) -> None:
        if self._handler is None:
            return
        handler, arrived, self._handler = self._handler, self._arrived, None
        signal.signal(PREEMPTION_SIGNAL, handler)
        if arrived:
            handler(*arrived[0])


class _LRStepOncePerTrainingStep:
    """fairchem's ``LRScheduler`` (every attribute forwarded) whose ``step`` runs at most once per
    training step of its trainer and ends the step's hold on the preemption signal. The trainer is
    held weakly: no reference cycle keeps a finished trainer, and the LMDB files it opened, alive."""

    def __init__(self, scheduler, trainer) -> None:
        self._scheduler, self._trainer, self.stepped_at = scheduler, weakref.ref(trainer), None

    def __getattr__(self, name: str):
        return getattr(self._scheduler, name)

    def advance(self, *args, **kwargs) -> None:
        """The LR step of the trainer's current training step, unless it was taken."""
        trainer = self._trainer()
        if self.stepped_at != trainer.step:
            self._scheduler.step(*args, **kwargs)
        self.stepped_at = trainer.step

    def step(self, *args, **kwargs) -> None:
        self.advance(*args, **kwargs)
        self._trainer()._preemption.release()


class ResumesAtCompletedStep:
    """Mixin for fairchem trainers (before ``OCPTrainer`` in the bases)."""

    def _guarded_schedule(self) -> _LRStepOncePerTrainingStep:
        """``self.scheduler``, wrapped once it exists (trainers may set their own after ``load_extras``)."""
        if not isinstance(self.scheduler, _LRStepOncePerTrainingStep):
            self.scheduler = _LRStepOncePerTrainingStep(self.scheduler, self)
            self._preemption = PreemptionHold()
        return self.scheduler

    def load_checkpoint(self, *args, **kwargs):
        result = super().load_checkpoint(*args, **kwargs)
        self._completed_step = self.step
        if getattr(self, "scheduler", None) is not None:  # none for inference
            self._guarded_schedule().stepped_at = self.step
        return result

    def _release_preemption(self) -> None:
        hold = getattr(self, "_preemption", None)  # none before the first update, and for inference
        if hold is not None:
            hold.release()

    def _forward(self, batch):
        self._release_preemption()  # the latest point: the next step (a schedule that did not step)
        return super()._forward(batch)

    def validate(self, *args, **kwargs):
        self._release_preemption()  # not held through a validation
        return super().validate(*args, **kwargs)

    def _backward(self, loss) -> None:
        self._guarded_schedule()
        self._preemption.hold()  # the step's changes of state begin
        super()._backward(loss)  # gradients, optimizer step, EMA
        self._completed_step = self.step

    def save(self, *args, **kwargs):
        running = self.step
        completed = min(running, getattr(self, "_completed_step", 0))
        training_state = kwargs.get("training_state", args[2] if len(args) > 2 else True)
        if training_state and 0 < completed == running and self.scheduler.scheduler_type != "ReduceLROnPlateau":
            self._guarded_schedule().advance()  # this step's LR step, taken before it is saved
        self.step = completed
        try:
            return super().save(*args, **kwargs)
        finally:
            self.step = running
