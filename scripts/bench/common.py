"""What every section shares: the recipes as the CLI builds them, timing in turns, and the report."""

from __future__ import annotations

import csv
import datetime
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch

from bench import ROOT
from sentiment.cli import SentimentCLI, build_cli
from sentiment.data.sources import IMDB_ARCHIVE

CONFIGS = ROOT / "configs"
WARMUP_STEPS = 5
MARK_START, MARK_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def config_args(*overlays: str) -> list[str]:
    """``--config`` arguments for the default recipe with ``overlays`` layered on it, as README runs them;
    ``seed.yaml`` stands alone."""
    names = list(overlays) if overlays[:1] == ("seed.yaml",) else ["imdb.yaml", *overlays]
    return [arg for name in names for arg in ("--config", str(CONFIGS / name))]


def archive_data_dir(archive: Path, data_dir: Path) -> Path:
    """``data_dir``, made, holding only ``archive`` (IMDb's archive or its ``aclImdb/`` folder) as a user's would."""
    data_dir.mkdir(parents=True)
    os.symlink(archive.resolve(), data_dir / ("aclImdb" if archive.is_dir() else IMDB_ARCHIVE))
    return data_dir


def write_reviews(path: Path, texts: list[str], labels) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels.tolist()))
    return path


def recipe(train_file: Path, work: Path, *overlays: str, args: tuple[str, ...] = ()) -> SentimentCLI:
    """The model, data module and Trainer that ``sentiment fit`` builds from the configs on ``train_file``
    (the data prepared and set up for fitting), without running anything. Its Trainer would fit one step:
    enough for a checkpoint."""
    cli = build_cli([*config_args(*overlays), "--data.train_file", str(train_file), "--data.data_dir", str(work),
                     "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
                     "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                     "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(work), *args],
                    run=False)
    cli.datamodule.setup("fit")
    return cli


def checkpoint(cli: SentimentCLI, path: Path) -> Path:
    """A checkpoint of the recipe after one training step, written by the Trainer as `sentiment fit` writes them
    (speed does not depend on the weights)."""
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.trainer.save_checkpoint(path)
    return path


class Timed:
    """What a runner has timed so far: reviews trained on (or predicted) and seconds taken."""

    seen, seconds = 0, 0.0

    @property
    def throughput(self) -> float:
        return self.seen / self.seconds


def in_turns(runners: list, steps: int, rounds: int = 5, warmup: int = WARMUP_STEPS) -> None:
    """Warm every runner up, then run ``steps`` timed steps of each (``runner.run(n, timed)``) in ``rounds``
    turns: a machine whose speed drifts (a shared host) then slows every side alike, and the ratios stay honest."""
    if warmup:
        for runner in runners:
            runner.run(warmup, timed=False)
    for r in range(rounds):
        for runner in runners:
            runner.run(steps // rounds + (r < steps % rounds))


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu} ({cpu_kind(cpuinfo)}), {cores} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"lightning {L.__version__}, {torch.get_num_threads()} torch threads")


def cpu_kind(cpuinfo: str) -> str:
    """Which kind of CPU PyTorch computes on: with native bfloat16 or without (AVX2 only), and whether that is
    emulated (a bfloat16 CPU, by ``cpuinfo``'s flags, limited to AVX2 by PyTorch's environment variables)."""
    from sentiment.cli import default_precision
    from sentiment.cpu import native_bfloat16
    from sentiment.inference.predictor import default_compute

    kind = "native bfloat16" if native_bfloat16() else "no bfloat16"
    emulated = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper().startswith("AVX2") and "avx512_bf16" in cpuinfo
    return (f"{kind}, {torch.backends.cpu.get_cpu_capability()}{', emulated AVX2-only' if emulated else ''}: "
            f"training in {default_precision()}, predicting in {default_compute()}")


@dataclass
class Report:
    """The rows of one run, as the table between the markers of BENCHMARKS.md."""

    command: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, what: str, measured: str, goal: str = "", note: str = "") -> None:
        self.rows.append((what, measured, goal, note))

    def table(self) -> str:
        lines = [MARK_START, "", f"Measured {datetime.date.today().isoformat()} by `{self.command}` on: {machine()}.",
                 "", "| what | measured | goal | ratio / note |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        return "\n".join(lines + ["", MARK_END])

    def write(self, path: Path) -> None:
        """Replace the table between the markers of ``path`` (a new file if there is none)."""
        text = path.read_text() if path.exists() else f"# Benchmarks\n\n{MARK_START}\n{MARK_END}\n"
        head, rest = text.split(MARK_START, 1)
        path.write_text(head + self.table() + rest.split(MARK_END, 1)[1])
