"""What a first `sentiment fit` costs: the whole cold command of the default recipe (or of another config: the
self-training one's, ``coldsemi``) against one epoch of the original project's recipe, as it ran."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import WARMUP_STEPS, Report, Timed, archive_data_dir, config_args, in_turns
from bench.training import ORIGINAL, OriginalProcess, original_encode
from sentiment.inference.checkpoint import read_checkpoint


# Runs a command and writes its peak memory (wait4's, the largest of it and its workers) to a file. A small process
# starts the fit: Linux keeps the largest resident size a process has had across exec, and a child forked from this
# benchmark's large process would report that.
_PEAK = ("import os, subprocess, sys; fit = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(fit.pid, 0); "
         "open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(status))")


class ColdFit(Timed):
    """`sentiment fit --config configs/imdb.yaml` (``overlays`` layered on it) as a new user runs it: a new process
    and a ``data_dir`` holding only the archive, so reading, tokenizing and the vocabulary are paid too. ``run(n)`` is
    ``n`` whole fits; ``seen`` counts fits. ``extra``: arguments after the config's (a quick pass cuts the fit
    short)."""

    def __init__(self, archive: Path, work: Path, extra: list[str], overlays: tuple[str, ...] = ()) -> None:
        self.archive, self.work, self.extra, self.fits = archive, work, extra, 0
        self.overlays = overlays
        self.accuracy: float | None = None
        self.peak_mb = 0.0  # the largest process of any fit so far, its tokenizing workers included

    def run(self, fits: int, timed: bool = True) -> None:
        for _ in range(fits):
            self.fits += 1
            root = self.work / f"fit{self.fits}"
            data_dir = archive_data_dir(self.archive, root / "data")
            cmd = [sys.executable, "-m", "sentiment", "fit", *config_args(*self.overlays),
                   "--data.data_dir", str(data_dir), "--trainer.default_root_dir", str(root),
                   "--trainer.enable_progress_bar", "false", *self.extra]
            log, peak = root / "fit.log", root / "peak.txt"
            start = time.perf_counter()
            with open(log, "w") as out:
                fit = subprocess.run([sys.executable, "-c", _PEAK, str(peak), *cmd], stdout=out,
                                     stderr=subprocess.STDOUT)
            seconds = time.perf_counter() - start
            if fit.returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{log.read_text()[-3000:]}")
            self.peak_mb = max(self.peak_mb, int(peak.read_text()) / 1024)  # Linux counts KiB
            best = next(root.glob("lightning_logs/*/checkpoints/best.ckpt"), None)
            if best is not None:  # the score of the checkpoint the user gets
                states = read_checkpoint(best).get("callbacks", {})
                scores = [s.get("best_model_score") for k, s in states.items() if k.startswith("ModelCheckpoint")]
                self.accuracy = float(scores[0]) if scores and scores[0] is not None else None
            if timed:
                self.seen, self.seconds = self.seen + 1, self.seconds + seconds


class OriginalEpochs(Timed):
    """Whole epochs of the original recipe as it ran (``OriginalProcess``: its own process, its own text pipeline's
    ids, batch 50, plain Adam); ``seen`` counts epochs. Only the training steps are timed, not its tokenizing: the
    cheaper this reference, the harder the goal."""

    def __init__(self, data_file: Path, steps_per_epoch: int) -> None:
        self.process, self.steps_per_epoch = OriginalProcess(data_file), steps_per_epoch

    def warm_up(self, steps: int) -> None:
        self.process.run(steps, timed=False)

    def run(self, epochs: int, timed: bool = True) -> None:
        before = self.process.seconds
        self.process.run(self.steps_per_epoch * epochs)
        if timed:
            self.seen, self.seconds = self.seen + epochs, self.seconds + self.process.seconds - before

    def close(self) -> None:
        self.process.close()


def bench_cold_fit(archive: Path, texts: list[str], labels: np.ndarray, report: Report, quick: bool,
                   overlay: str | None = None, bound: float = 3.0) -> None:
    """Two cold fits and two original epochs, in turns (one each, cut short, in a quick pass; one each with an
    ``overlay``, whose fit is a long one)."""
    ids, lengths, vocab_size = original_encode(texts)
    batch = ORIGINAL["data"]["loader"]["batch_size"]
    rounds = 1 if quick or overlay else 2
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "original.npz"
        np.savez(data_file, ids=ids, lengths=lengths, labels=labels, vocab_size=vocab_size)
        extra = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "2"] if quick else []
        cold = ColdFit(archive, Path(tmp), extra, (overlay,) if overlay else ())
        epochs = OriginalEpochs(data_file, 2 if quick else math.ceil(len(texts) / batch))
        try:
            epochs.warm_up(WARMUP_STEPS)
            in_turns([cold, epochs], rounds, rounds=rounds, warmup=0)
        finally:
            epochs.close()
    fit, epoch = cold.seconds / cold.seen, epochs.seconds / epochs.seen
    accuracy = "" if cold.accuracy is None else f", val/acc {100 * cold.accuracy:.2f}% (its best.ckpt)"
    config = f"configs/{overlay or 'imdb.yaml'}"
    report.add(f"cold `sentiment fit --config {config}`, the whole command (a data_dir holding only the "
               "archive)", f"{fit:,.0f} s", f"<= {bound:g}x one original epoch",
               f"{fit / epoch:.2f}x one original epoch{accuracy}, peak memory {cold.peak_mb:,.0f} MB")
    report.add(f"  one epoch of the original recipe as it ran ({len(texts):,} reviews, batch {batch}, its own "
               "process; training steps only)", f"{epoch:,.1f} s", "", "the reference")
