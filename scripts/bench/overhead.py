"""Lightning's cost per training step: ``Trainer`` + SentimentClassifier against the same step in a plain loop."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from bench.common import WARMUP_STEPS, Report, Timed, in_turns
from bench.training import PRECISION, recipe_loop, settings
from sentiment.cli import SentimentCLI
from sentiment.data.batches import as_batch


class _FixedData(L.LightningDataModule):
    def __init__(self, dataset, batch_size: int):
        super().__init__()
        self.data, self.batch_size = dataset, batch_size

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.data, batch_size=self.batch_size, shuffle=True, collate_fn=as_batch)


class FitTimer(L.Callback):
    """Times the training steps of a fit after its first ``warmup`` steps (counted across epochs: a small
    corpus has fewer batches per epoch). ``bench.cores`` loads it into `sentiment fit`
    (``--trainer.callbacks+=bench.overhead.FitTimer``); there rank 0 writes ``{"seen", "seconds"}`` to
    $SENTIMENT_FIT_TIMER."""

    def __init__(self, warmup: int = WARMUP_STEPS):
        self.warmup, self.steps, self.start, self.seen, self.seconds = warmup, 0, None, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps += 1
        if self.steps == self.warmup + 1:
            self.start, self.seen = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.seen += len(batch.get("labelled", batch)["labels"])  # labelled reviews, beside unlabelled ones or not
            self.seconds = time.perf_counter() - self.start

    def on_train_end(self, trainer, pl_module):
        if not self.seen:
            raise RuntimeError(f"FitTimer: the fit ended within its {self.warmup} warm-up steps")
        if trainer.global_rank == 0 and "SENTIMENT_FIT_TIMER" in os.environ:
            Path(os.environ["SENTIMENT_FIT_TIMER"]).write_text(json.dumps({"seen": self.seen, "seconds": self.seconds}))


class _TrainerRunner(Timed):
    """``Trainer.fit`` on the same model for ``steps`` steps at a time (each fit's first step untimed)."""

    def __init__(self, model: L.LightningModule, data: _FixedData) -> None:
        self.model, self.data = model, data

    def run(self, steps: int, timed: bool = True) -> None:
        timer = FitTimer(warmup=1)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = L.Trainer(accelerator="cpu", precision=PRECISION, max_steps=steps + 1, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                limit_val_batches=0, default_root_dir=tmp, callbacks=[timer])
            trainer.fit(self.model, self.data)
        if timed:
            self.seen, self.seconds = self.seen + timer.seen, self.seconds + timer.seconds


def bench_lightning(cli: SentimentCLI, report: Report, steps: int) -> None:
    """``Trainer`` against a plain loop on the recipe's step (with adversarial training) and on the plain step
    (without): Lightning's cost per step is about the same in both, so it weighs twice as much on the second."""
    data = _FixedData(cli.datamodule.dataset("train"), cli.datamodule.loader.batch_size)
    recipe = cli.model.hparams.adversarial
    pairs = []
    for adversarial in (recipe, 0.0):
        plain = recipe_loop(cli, adversarial=adversarial)
        torch.manual_seed(0)
        lightning = _TrainerRunner(type(cli.model)(**settings(cli, adversarial=adversarial)), data)
        pairs.append((lightning, plain))
    in_turns([runner for pair in pairs for runner in pair], steps)
    for (lightning, plain), name in zip(pairs, (f"the recipe's step (adversarial training {recipe:g})",
                                                "the plain step")):
        report.add(f"training throughput, `Trainer` + SentimentClassifier, {name}",
                   f"{lightning.throughput:,.0f} reviews/s", "<= 5% slower",
                   f"{100 * (plain.throughput / lightning.throughput - 1):+.1f}% vs plain loop "
                   f"({plain.throughput:,.0f} reviews/s)")
