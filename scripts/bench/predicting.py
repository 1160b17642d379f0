"""`sentiment predict` on raw reviews, and one review through the Python API."""

from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path

import numpy as np

from bench.common import Report, checkpoint, recipe, timed
from bench.training import PRECISION
from sentiment.classifier import SentimentClassifier
from sentiment.cli import cli_main


def bench_predict(texts: list[str], train_file: Path, work: Path, report: Report) -> Path:
    """Returns the default recipe's checkpoint, for the server's section."""
    reviews = work / "reviews.txt"
    reviews.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    out = work / "predictions.csv"
    checkpoints = {}
    for name, overlays in (("default model", ()), ("`imdb_fast.yaml` model", ("imdb_fast.yaml",))):
        ckpt = checkpoints[name] = checkpoint(recipe(train_file, work / name, *overlays), work / f"{name}.ckpt")
        elapsed, _ = timed(lambda: cli_main(["predict", "--ckpt_path", str(ckpt), "--data.predict_file", str(reviews),
                                             "--prediction_writer.output_path", str(out),
                                             "--trainer.enable_progress_bar", "false"]))
        with open(out) as f:
            n_rows = sum(1 for _ in csv.reader(f)) - 1
        assert n_rows == len(texts), (n_rows, len(texts))
        report.add(f"`sentiment predict`, {name}, {len(texts):,} raw reviews -> CSV (the command in process after "
                   f"its imports, {PRECISION})", f"{len(texts) / elapsed:,.0f} reviews/s", ">= 5,000/s",
                   f"{elapsed:.1f} s")
    loaded = SentimentClassifier.load_from_checkpoint(checkpoints["default model"])
    loaded.predict(texts[0])
    latencies = []
    for text in texts[:200]:
        start = time.perf_counter()
        loaded.predict(text)
        latencies.append(time.perf_counter() - start)
    report.add("`SentimentClassifier.predict`, default model, one review",
               f"{1000 * statistics.median(latencies):.2f} ms median", "<= 5 ms",
               f"p99 {1000 * np.percentile(latencies, 99):.2f} ms")
    return checkpoints["default model"]
