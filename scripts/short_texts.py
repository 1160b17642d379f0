#!/usr/bin/env python
"""A stand-in for small sets of short texts, made of IMDb: each review cut to its last 20 tokens (BENCHMARKS.md,
"Small sets of short texts"). Writes ``train.csv`` (a seeded share of the training split by movie) and
``test.csv`` (the validation split by movie), with ``text`` and ``label`` columns, for the own-data command:

    python scripts/short_texts.py --data.data_dir data --output short/
    sentiment fit --config configs/imdb.yaml --data.train_file short/train.csv --data.test_file short/test.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from jsonargparse import ArgumentParser

from sentiment.data.datamodule import SentimentDataModule
from sentiment.data.text import tokenize


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="config")
    parser.add_class_arguments(SentimentDataModule, "data")
    parser.add_argument("--output", type=Path, required=True, help="folder for train.csv and test.csv")
    parser.add_argument("--tokens", type=int, default=20, help="tokens kept of each review, from its end")
    parser.add_argument("--train_reviews", type=int, default=9232, help="training reviews kept (seeded)")
    args = parser.parse_args(argv)
    dm = SentimentDataModule(**vars(args.data))
    reviews, classes, reader = dm.corpus.read_splits()
    keep = np.sort(np.random.default_rng(dm.encoding.seed).permutation(len(classes["train"]))[: args.train_reviews])
    args.output.mkdir(parents=True, exist_ok=True)
    for name, split, rows in (("train", "train", keep), ("test", "val", np.arange(len(classes["val"])))):
        with open(args.output / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["text", "label"])
            for i in rows:
                out.writerow([" ".join(tokenize(reviews[split].texts[i])[-args.tokens:]),
                              reader.labels[classes[split][i]]])
        print(f"{args.output / f'{name}.csv'}: {len(rows):,} reviews")


if __name__ == "__main__":
    sys.exit(main())
