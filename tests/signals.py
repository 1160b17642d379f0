"""A callback for the fault tests: the training process sends itself a signal, as a user or the system would."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class SignalAtStep(Callback):
    """Sends ``signum`` to this process when the ``step``-th optimizer step is about to start."""

    def __init__(self, step: int, signum: int = int(signal.SIGKILL)) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
