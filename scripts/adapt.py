#!/usr/bin/env python
"""Training a model further on texts of another kind (BENCHMARKS.md, "Training further from a trained model").

Makes a polarity task of short Reddit comments from GoEmotions' training file: a comment is ``positive`` when each
of its emotions is in the positive group of the dataset's paper (Demszky et al. 2020), ``negative`` when each is in
the negative group; ambiguous, neutral and mixed ones are left out. A seeded test set of ``--test_size`` comments,
and training files of each ``--train_sizes`` from the rest, are written to ``--output``. Then, for each training
size and seed, it scores on the test set:

- ``as is``: the trained model of ``--ckpt_path`` (``sentiment test``);
- ``alone``: a model trained on the training file alone (``sentiment fit --config configs/imdb.yaml``);
- ``init_from``: the trained model trained further on it (the same, with ``--init_from``).

    python scripts/adapt.py --goemotions ../shared/data/goemotions_train.csv --ckpt_path imdb/best.ckpt --output adapt/
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# The paper's sentiment grouping of the 27 emotions (neutral aside); the ambiguous ones are left out here
POSITIVE = {"admiration", "amusement", "approval", "caring", "desire", "excitement", "gratitude", "joy", "love",
            "optimism", "pride", "relief"}
NEGATIVE = {"anger", "annoyance", "disappointment", "disapproval", "disgust", "embarrassment", "fear", "grief",
            "nervousness", "remorse", "sadness"}
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "imdb.yaml"


def polarity(labels: str) -> str | None:
    emotions = set(labels.split(";"))
    if emotions <= POSITIVE:
        return "positive"
    if emotions <= NEGATIVE:
        return "negative"
    return None


def write_task(goemotions: Path, output: Path, train_sizes: list[int], test_size: int, seed: int) -> dict[str, Path]:
    comments = pd.read_csv(goemotions, keep_default_na=False)
    comments["label"] = comments["labels"].map(polarity)
    comments = comments.dropna(subset=["label"])[["text", "label"]]
    order = np.random.default_rng(seed).permutation(len(comments))
    output.mkdir(parents=True, exist_ok=True)
    files = {"test": output / "test.csv"}
    comments.iloc[order[:test_size]].to_csv(files["test"], index=False, quoting=csv.QUOTE_MINIMAL)
    rest = order[test_size:]
    for size in train_sizes:
        files[str(size)] = output / f"train_{size}.csv"
        comments.iloc[rest[:size]].to_csv(files[str(size)], index=False)
    counts = comments["label"].value_counts().to_dict()
    print(f"{len(comments):,} comments of one polarity ({counts}); test {test_size:,}, rest {len(rest):,}")
    return files


def test_accuracy(ckpt: Path, test_file: Path) -> float:
    out = run(["test", "--ckpt_path", str(ckpt), "--data.test_file", str(test_file)])
    return float(re.search(r"test/acc\s+([0-9.]+)", out).group(1))


def run(args: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "sentiment", *args, "--trainer.enable_progress_bar", "false"],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"sentiment {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--goemotions", type=Path, required=True, help="GoEmotions' training CSV (text,labels)")
    parser.add_argument("--ckpt_path", type=Path, required=True, help="the trained model (e.g. of IMDb)")
    parser.add_argument("--output", type=Path, required=True, help="folder for the task's files and the runs")
    parser.add_argument("--train_sizes", type=int, nargs="+", default=[300, 1000, 3000])
    parser.add_argument("--test_size", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--arms", nargs="+", default=["alone", "init_from"], choices=["alone", "init_from"])
    parser.add_argument("--lr", type=float, default=None,
                        help="--model.lr of the init_from runs (default: the recipe's)")
    args = parser.parse_args(argv)
    files = write_task(args.goemotions, args.output, args.train_sizes, args.test_size, seed=0)
    print(f"as is: test accuracy {test_accuracy(args.ckpt_path, files['test']):.4f}")
    for size in args.train_sizes:
        for arm in args.arms:
            scores = []
            for seed in args.seeds:
                root = args.output / f"runs/{size}_{arm}_{seed}_{args.lr}"
                extra = ["--init_from", str(args.ckpt_path)] if arm == "init_from" else []
                if arm == "init_from" and args.lr is not None:
                    extra += ["--model.lr", str(args.lr)]
                run(["fit", "--config", str(CONFIG), "--data.train_file", str(files[str(size)]),
                     "--data.data_dir", str(args.output / "data"), "--seed_everything", str(seed),
                     "--trainer.default_root_dir", str(root), *extra])
                scores.append(test_accuracy(root / "lightning_logs/version_0/checkpoints/best.ckpt", files["test"]))
            mean = statistics.mean(scores)
            spread = statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1 else 0.0
            print(f"{size:>6} {arm:<9}: test accuracy {mean:.4f} +- {spread:.4f} (seeds: "
                  f"{', '.join(f'{s:.4f}' for s in scores)})", flush=True)


if __name__ == "__main__":
    main()
