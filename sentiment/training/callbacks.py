"""Callbacks and checkpoint I/O of the ``sentiment`` command: a fresh ``last.ckpt`` while training (and on
Ctrl-C), checkpoint files that are never half-written, and the CSV prediction writer."""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import BasePredictionWriter, Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from sentiment.cpu import CpuLoad
from sentiment.inference.checkpoint import write_checkpoint
from sentiment.inference.predictor import answer_cells, answer_columns
from sentiment.io import atomic_open
from sentiment.data.settings import Encoding


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its destination, then renames it into place.

    A run killed while saving leaves the previous checkpoint intact, never a truncated one. (Lightning's
    own writer stages the file in the system temp folder; from another filesystem the final move is a copy.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        write_checkpoint(checkpoint, path)


class CpuThreads(L.Callback):
    """The threads a fit computes with, on a machine it may share with other CPU-bound processes.

    PyTorch computes with a thread per core, and its threads wait for each other by spinning: beside other busy
    processes they take turns on cores those need, and a fit slows far beyond its share (BENCHMARKS.md, "A good
    Lightning citizen"). So, before the first step (over the time since this callback was made) and every
    ``interval`` seconds of training after, this counts the cores other processes kept busy and computes with the ones
    they left (at least one); alone, with them all. A number of threads you chose wins: ``threads`` or
    ``OMP_NUM_THREADS``.

    Args:
        threads: compute with this many threads whatever else runs (None: follow the machine's load).
        interval: seconds between two looks at the machine's load.
    """

    def __init__(self, threads: int | None = None, interval: float = 1.0) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads, self.interval = threads, interval
        # the first look covers the time from here to the first step: two fits started together share out the
        # cores before either one's first step, which beside another spinning process took seconds, not 0.2
        self.load: CpuLoad | None = CpuLoad()
        self.adapting = False
        self.most = 0
        self.looked = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.most = torch.get_num_threads()  # restored after the fit: what runs after it in this process is not ours
        if self.threads is not None:
            torch.set_num_threads(self.threads)
            return
        if self.load is None:  # a second fit with this callback
            self.load = CpuLoad()
        self.adapting = bool(self.load.cores) and "OMP_NUM_THREADS" not in os.environ

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.look()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if time.monotonic() - self.looked >= self.interval:
            self.look()

    def look(self) -> None:
        """Compute with the cores other processes left since the last look."""
        if not self.adapting:
            return
        self.looked = time.monotonic()
        others = self.load.others()
        if others is not None:
            threads = max(1, min(self.most, round(len(self.load.cores) - others)))
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.most:
            torch.set_num_threads(self.most)
            self.adapting, self.load, self.most = False, None, 0


class AutoSave(Checkpoint):
    """Owns ``last.ckpt``: keeps it fresh during an epoch and saves it on Ctrl-C, so a stopped run loses little.

    ``last.ckpt`` is written beside ``best.ckpt`` every ``minutes`` of training (or every ``every_n_steps``
    optimizer steps), at the end of each epoch and at the end of training. As a ``Checkpoint``, Lightning
    runs it after ``ModelCheckpoint``, so the saved state knows the epoch's best score. The first Ctrl-C
    (SIGINT) finishes the current step, saves ``last.ckpt`` and stops; a second one stops at once.
    ``sentiment fit ... --ckpt_path last`` continues from there with the same batches and, on one process,
    the same random numbers: it ends with the weights and metrics of a run that was never stopped.

    Args:
        minutes: save ``last.ckpt`` at least this often while training (0: only at the end of an epoch).
        every_n_steps: save every this many optimizer steps instead (0: go by ``minutes``).
    """

    clock = staticmethod(time.monotonic)  # seconds; a test may set its own

    def __init__(self, minutes: float = 5.0, every_n_steps: int = 0) -> None:
        if minutes < 0 or every_n_steps < 0:
            raise ValueError(f"minutes and every_n_steps must be at least 0, got {minutes} and {every_n_steps}")
        self.minutes, self.every_n_steps = minutes, every_n_steps
        self._last_save = 0.0
        self._saved_step = -1
        self._stop_requested = False
        self._previous_handler = None

    # --- what a checkpoint carries besides Lightning's own state ------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        # dropout and word dropout draw from torch's global RNG: a resumed run continues its sequence
        return {"torch_rng_state": torch.get_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "torch_rng_state" in state_dict:
            torch.set_rng_state(state_dict["torch_rng_state"])

    # --- when to save --------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_save = self.clock()
        self._stop_requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._stop_requested = True
        signal.signal(signal.SIGINT, self._previous_handler or signal.default_int_handler)  # twice: stop now
        print("\nCtrl-C: stopping after this step and saving last.ckpt (press again to stop at once) ...",
              flush=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        path = self._last_path(trainer)
        stop = trainer.strategy.reduce_boolean_decision(self._stop_requested, all=False)
        if stop:
            if path is not None:
                self._save(trainer, path)
                rank_zero_info(f"Saved {path} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                               "continue with the same command and --ckpt_path last")
            raise KeyboardInterrupt  # Lightning's own graceful shutdown from here
        if path is None:
            return
        if self.every_n_steps:
            due = trainer.global_step % self.every_n_steps == 0
        else:
            due = self.minutes > 0 and self.clock() - self._last_save >= self.minutes * 60
            due = trainer.strategy.broadcast(due)  # clocks differ between processes; rank 0 decides
        if due:
            self._save(trainer, path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # (ModelCheckpoint refreshes last.ckpt only in epochs that improve on the best score)
        if (path := self._last_path(trainer)) is not None:
            self._save(trainer, path)

    def _save(self, trainer: L.Trainer, path: Path) -> None:
        if self._saved_step != trainer.global_step:
            trainer.save_checkpoint(path, weights_only=False)  # the full state: resumable
        self._saved_step = trainer.global_step
        self._last_save = self.clock()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handler()
        if (path := self._last_path(trainer)) is not None:  # e.g. max_steps reached within an epoch
            self._save(trainer, path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        if self._previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_handler)
        self._previous_handler = None

    @staticmethod
    def _last_path(trainer: L.Trainer) -> Path | None:
        """``last.ckpt`` beside the checkpoints of the run's ``ModelCheckpoint``; None when nothing is saved."""
        checkpoint = trainer.checkpoint_callback
        if trainer.fast_dev_run or trainer.sanity_checking or checkpoint is None or not checkpoint.dirpath:
            return None
        return Path(checkpoint.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"


class PredictionWriter(BasePredictionWriter):
    """Writes one CSV row per input review, in input order, batch by batch (memory stays flat).

    Columns: ``index`` (0-based row of the input), ``label`` (the predicted class), ``score`` (its
    probability), ``p_<label>`` for every class (for a binary model ``p_positive`` is the probability that the
    review is positive), ``expected`` where the labels are numbers (the probability-weighted label), and ``id``
    when the input has an id column; an empty (or blank) review's row has its index and id alone, the rest empty.
    A model of label sets writes ``labels`` (the predicted labels, most probable first, joined by the data's
    ``label_separator``; empty for none) in place of ``label`` and ``score``.
    The file appears only once complete.

    Args:
        output_path: the CSV file to write.
    """

    def __init__(self, output_path: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.output_path = Path(output_path)
        self._output = None  # the atomic_open of the file being written, from start to end of predicting
        self._file = None
        self._writer = None
        self.rows = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        encoding = getattr(trainer.datamodule, "encoding", None)
        self._separator = encoding.label_separator if encoding is not None else Encoding.label_separator
        self._output = atomic_open(self.output_path, "w", newline="", encoding="utf-8")
        self._file = self._output.__enter__()
        self._writer = None
        self.rows = 0

    def write_on_batch_end(self, trainer, pl_module, prediction: dict[str, Any], batch_indices, batch,
                           batch_idx: int, dataloader_idx: int) -> None:
        answers = prediction["answers"]
        index = prediction["index"]
        index = index.tolist() if index is not None else range(self.rows, self.rows + len(answers))
        ids = prediction.get("id")
        if self._writer is None:
            self._writer = csv.writer(self._file)
            self._writer.writerow(self._header(pl_module, ids is not None))
        texts = batch.get("text") if isinstance(batch, dict) else None
        # an empty line: nothing to classify, and it says so
        rows = [[i, *answer_cells(a if texts is None or texts[k].strip() else None, self._columns, self._separator)]
                for k, (i, a) in enumerate(zip(index, answers))]
        if ids is not None:
            for row, id_ in zip(rows, ids):
                row.append(id_)
        self._writer.writerows(rows)
        self.rows += len(rows)

    def _header(self, pl_module, with_id: bool) -> list[str]:
        self._columns = answer_columns(pl_module.labels, pl_module.multi_label)
        return ["index", *self._columns, *(["id"] if with_id else [])]

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._writer is None:  # no input rows: still a well-formed file
            csv.writer(self._file).writerow(self._header(pl_module, False))
        output, self._output, self._file = self._output, None, None
        output.__exit__(None, None, None)  # flush, fsync, rename into place
        rank_zero_info(f"Wrote {self.rows} predictions to {self.output_path}")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._output is not None:  # the temporary file goes; nothing appears at output_path
            output, self._output, self._file = self._output, None, None
            output.__exit__(type(exception), exception, exception.__traceback__)
