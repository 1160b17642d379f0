"""How to spend two cores on `sentiment fit`: one process with two threads, one thread, or DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, WARMUP_STEPS, Report, Timed, archive_data_dir, config_args, in_turns

CORE_LAYOUTS = [
    ("1 process x 2 threads", [], {}),
    ("1 process x 1 thread", [], {"OMP_NUM_THREADS": "1"}),
    ("DDP, 2 processes x 1 thread (gloo)", ["--trainer.strategy", "ddp", "--trainer.devices", "2"], {"OMP_NUM_THREADS": "1"}),
]


class FitLayout(Timed):
    """`sentiment fit` of the default recipe in one layout; ``run(n)`` is a whole fit of warm-up + ``n`` steps,
    timed inside it after the warm-up (``FitTimer``), all processes together."""

    def __init__(self, data_dir: Path, root: Path, extra: list[str], env: dict[str, str]) -> None:
        self.data_dir, self.root, self.extra, self.env = data_dir, root, extra, env
        self.processes = 2 if "--trainer.strategy" in extra else 1

    def run(self, steps: int, timed: bool = True) -> None:
        timing = self.root / "timing.json"
        cmd = [sys.executable, "-m", "sentiment", "fit", *config_args(), "--data.data_dir", str(self.data_dir),
               "--trainer.max_steps", str(WARMUP_STEPS + steps), "--trainer.limit_val_batches", "0",
               "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
               "--trainer.logger", "false", "--trainer.default_root_dir", str(self.root), "--checkpoint.monitor",
               "null", "--checkpoint.save_top_k", "0", "--trainer.callbacks+=bench.overhead.FitTimer", *self.extra]
        pythonpath = os.pathsep.join(filter(None, [str(ROOT / "scripts"), os.environ.get("PYTHONPATH")]))
        done = subprocess.run(cmd, capture_output=True, text=True, env={
            **os.environ, **self.env, "PYTHONPATH": pythonpath, "SENTIMENT_FIT_TIMER": str(timing)})
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        measured = json.loads(timing.read_text())
        if timed:
            self.seen += measured["seen"] * self.processes
            self.seconds += measured["seconds"]


def bench_cores(archive: Path, report: Report, steps: int, quick: bool) -> None:
    """Training throughput of `sentiment fit` in each layout, two fits of each taken in turns (one in a quick
    pass, of DDP only: the layout most likely to break)."""
    layouts = CORE_LAYOUTS[-1:] if quick else CORE_LAYOUTS
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = archive_data_dir(archive, Path(tmp) / "data")
        runners = [(name, FitLayout(data_dir, Path(tmp) / f"run{i}", extra, env))
                   for i, (name, extra, env) in enumerate(layouts)]
        rounds = 1 if quick else 2
        in_turns([runner for _, runner in runners], steps * rounds, rounds=rounds, warmup=0)
    best = max(runner.throughput for _, runner in runners)
    for name, runner in runners:
        report.add(f"`sentiment fit`, {name}", f"{runner.throughput:,.0f} reviews/s", "fastest is the default",
                   "fastest" if runner.throughput == best else f"{runner.throughput / best:.2f}x the fastest")
