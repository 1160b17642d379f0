"""Predicting raw reviews: the Python API (``Predictor``) and `sentiment predict`, against fastText; start-up."""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import Report, Timed, checkpoint, in_turns, recipe
from sentiment.cli import cli_main
from sentiment.cpu import native_bfloat16
from sentiment.inference.predictor import Predictor
from sentiment.data.text import tokenize, truncate


class FastText(Timed):
    """fastText (the C++ library; word bigrams) trained on the same reviews as the model, as our model reads them
    (the first 64 + last 64 tokens); it predicts from the raw reviews, its own tokenizing included."""

    def __init__(self, texts: list[str], labels: np.ndarray, work: Path, max_length: int, truncation: str) -> None:
        import fasttext

        data = work / "fasttext.txt"
        with open(data, "w", encoding="utf-8") as f:
            for text, label in zip(texts, labels.tolist()):
                f.write(f"__label__{label} {' '.join(truncate(tokenize(text), max_length, truncation))}\n")
        self.model = fasttext.train_supervised(str(data), wordNgrams=2, epoch=5, verbose=0, thread=2)
        self.texts = [t.replace("\n", " ") for t in texts]  # fastText reads one line per review

    def run(self, passes: int, timed: bool = True) -> None:
        for _ in range(passes):
            start = time.perf_counter()
            self.model.predict(self.texts)
            if timed:
                self.seen, self.seconds = self.seen + len(self.texts), self.seconds + time.perf_counter() - start


class PythonAPI(Timed):
    """``Predictor.from_checkpoint(ckpt, compute=compute).predict(texts)``, the checkpoint read in each pass."""

    def __init__(self, ckpt: Path, texts: list[str], compute: str | None = None) -> None:
        self.ckpt, self.texts, self.compute = ckpt, texts, compute

    def run(self, passes: int, timed: bool = True) -> None:
        for _ in range(passes):
            start = time.perf_counter()
            answers = Predictor.from_checkpoint(self.ckpt, compute=self.compute).predict(self.texts)
            if timed:
                self.seen, self.seconds = self.seen + len(answers), self.seconds + time.perf_counter() - start


class Command(Timed):
    """`sentiment predict` on a file of the reviews: in this process after its imports, or as a whole new process
    (``whole``: Python's and the imports' start-up included)."""

    def __init__(self, ckpt: Path, reviews: Path, out: Path, n: int, whole: bool = False) -> None:
        self.args = ["predict", "--ckpt_path", str(ckpt), "--data.predict_file", str(reviews),
                     "--prediction_writer.output_path", str(out), "--trainer.enable_progress_bar", "false"]
        self.out, self.n, self.whole = out, n, whole

    def run(self, passes: int, timed: bool = True) -> None:
        for _ in range(passes):
            start = time.perf_counter()
            if self.whole:
                subprocess.run([sys.executable, "-m", "sentiment", *self.args], check=True, capture_output=True)
            else:
                cli_main(self.args)
            seconds = time.perf_counter() - start
            with open(self.out) as f:
                rows = sum(1 for _ in csv.reader(f)) - 1
            assert rows == self.n, (rows, self.n)
            if timed:
                self.seen, self.seconds = self.seen + rows, self.seconds + seconds


def write_lines(path: Path, texts: list[str]) -> Path:
    path.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    return path


def start_up(two: Path, ckpt: Path, rounds: int) -> dict[str, float]:
    """Median seconds of each start, taken in turns: Python importing torch, the Predictor, Lightning, and
    `sentiment predict` on a two-line file (the whole command)."""
    starts = {
        "`import torch`": [sys.executable, "-c", "import torch"],
        "`import sentiment.inference.predictor`": [sys.executable, "-c", "import sentiment.inference.predictor"],
        "`import lightning`": [sys.executable, "-c", "import lightning"],
        "`sentiment predict`, two reviews": [sys.executable, "-m", "sentiment", "predict", "--ckpt_path", str(ckpt),
                                             "--data.predict_file", str(two), "--prediction_writer.output_path",
                                             str(two.with_suffix(".csv")), "--trainer.enable_progress_bar", "false"],
    }
    seconds: dict[str, list[float]] = {name: [] for name in starts}
    for _ in range(rounds):
        for name, cmd in starts.items():
            begin = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - begin)
    return {name: statistics.median(s) for name, s in seconds.items()}


def bench_predict(texts: list[str], labels: np.ndarray, train_file: Path, work: Path, report: Report,
                  rounds: int, warmup: int = 1) -> Path:
    """Returns the default recipe's checkpoint, for the server's section."""
    reviews = write_lines(work / "reviews.txt", texts)
    out = work / "predictions.csv"
    cli = recipe(train_file, work / "default model")
    ckpt = checkpoint(cli, work / "default.ckpt")
    fast_ckpt = checkpoint(recipe(train_file, work / "fast model", "imdb_fast.yaml"), work / "fast.ckpt")
    # the default recipe before the bag of n-grams
    before = ("--data.encoding.bag_ngrams", "0", "--model.net.hidden_dim", "128")
    bagless_ckpt = checkpoint(recipe(train_file, work / "bagless model", args=before), work / "bagless.ckpt")
    hp = cli.datamodule.encoding
    fasttext = FastText(texts, labels, work, hp.max_length, hp.truncation)
    api, command = PythonAPI(ckpt, texts), Command(ckpt, reviews, out, len(texts))
    plain = PythonAPI(ckpt, texts, "float32-plain")  # float32 through PyTorch's own LSTM kernel
    whole = Command(ckpt, reviews, out, len(texts), whole=True)
    fast_command = Command(fast_ckpt, reviews, out, len(texts))
    bagless, bagless_plain = PythonAPI(bagless_ckpt, texts), PythonAPI(bagless_ckpt, texts, "float32-plain")
    runners = [fasttext, api, plain, bagless, bagless_plain, command, whole, fast_command]
    in_turns(runners, rounds, rounds=rounds, warmup=warmup)
    n = f"{len(texts):,} raw reviews"
    report.add(f"fastText (C++, bigrams), {n} (its own tokenizing included): the reference",
               f"{fasttext.throughput:,.0f} reviews/s", "", f"{len(texts) / fasttext.throughput:.1f} s")
    compute = Predictor.from_checkpoint(ckpt).kernel
    goal = ">= 0.5x fastText" if native_bfloat16() else ">= 0.25x fastText"  # the goals per CPU kind
    for what, runner in (
            (f"`Predictor.predict`, default model, {n} ({compute}; the checkpoint read included)", api),
            (f"`sentiment predict`, default model, {n} -> CSV (in this process, after its imports)", command),
            (f"`sentiment predict`, default model, {n} -> CSV (the whole command: start-up included)", whole)):
        report.add(what, f"{runner.throughput:,.0f} reviews/s", goal,
                   f"{runner.throughput / fasttext.throughput:.2f}x fastText, {len(texts) / runner.throughput:.1f} s")
    report.add("  Python API against `sentiment predict` (after its imports), per review", "", ">= 1x",
               f"{api.throughput / command.throughput:.2f}x")
    report.add(f"`Predictor.predict`, default model, {n}, float32 through PyTorch's LSTM "
               "(`compute=\"float32-plain\"`)", f"{plain.throughput:,.0f} reviews/s", "",
               f"the default at {api.throughput / plain.throughput:.2f}x")
    before = ("`Predictor.predict`, the default model before the bag of n-grams (`--data.encoding.bag_ngrams 0 "
              "--model.net.hidden_dim 128`)")
    report.add(f"{before}, {n}", f"{bagless.throughput:,.0f} reviews/s", "the default <= 15% slower",
               f"the default at {api.throughput / bagless.throughput:.2f}x its speed")
    report.add(f"{before}, {n}, float32 through PyTorch's LSTM, as predicting ran before gate tables",
               f"{bagless_plain.throughput:,.0f} reviews/s", ">= 2.5x without bfloat16",
               f"the default at {api.throughput / bagless_plain.throughput:.2f}x")
    report.add(f"`sentiment predict`, `imdb_fast.yaml` model, {n} -> CSV (in this process, after its imports)",
               f"{fast_command.throughput:,.0f} reviews/s", "",
               f"{fast_command.throughput / fasttext.throughput:.2f}x fastText")
    for name, seconds in start_up(write_lines(work / "two.txt", texts[:2]), ckpt, rounds).items():
        report.add(f"start-up: {name}", f"{seconds:.2f} s", "", "median, new processes in turns")
    predictor = Predictor.from_checkpoint(ckpt)
    predictor.predict(texts[0])
    latencies = []
    for text in texts[:200]:
        start = time.perf_counter()
        predictor.predict(text)
        latencies.append(time.perf_counter() - start)
    report.add("`Predictor.predict`, default model, one review", f"{1000 * statistics.median(latencies):.2f} ms median",
               "<= 5 ms", f"p99 {1000 * np.percentile(latencies, 99):.2f} ms")
    return ckpt
