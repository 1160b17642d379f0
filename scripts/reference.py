#!/usr/bin/env python
"""TF-IDF (1-2 grams) + logistic regression on the same split and the same words as `sentiment fit`: the reference of
the Accuracy tables in BENCHMARKS.md (scikit-learn, a benchmark-only dependency).

    python scripts/reference.py --data.data_dir data                          # IMDb, positive / negative
    python scripts/reference.py --data.data_dir data --data.encoding.target rating     # IMDb's star ratings
    python scripts/reference.py --data.train_file train.csv --data.test_file test.csv

The data options are `sentiment fit`'s own (`--data.*`, configs with --config): the reviews, the label set and
the seeded, stratified validation split come from the project's own code. The documents are the tokens the model
reads (`--max_length` 0: every token). Prints accuracy, macro F1, the calibration error and, where the labels are
numbers, the mean absolute error, on the validation split (and the test split when there is one), for each C.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from jsonargparse import ArgumentParser

from sentiment.training.calibration import expected_calibration_error
from sentiment.data.datamodule import SentimentDataModule
from sentiment.data.labels import numeric_values
from sentiment.data.text import tokenize, truncate


def documents(dm: SentimentDataModule, max_length: int) -> tuple[dict[str, tuple[list[str], np.ndarray]], tuple]:
    """Each split's reviews as the space-joined tokens the model reads, with their classes; and the labels."""
    hp = dm.encoding
    reviews, classes, reader = dm.corpus.read_splits()
    keep = max_length or None
    return {split: ([" ".join(truncate(tokenize(t), keep, hp.truncation) if keep else tokenize(t))
                     for t in reviews[split].texts], classes[split]) for split in reviews}, reader.labels


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="config")
    parser.add_class_arguments(SentimentDataModule, "data")
    parser.add_argument("--max_length", type=int, default=128, help="tokens per review (0: all)")
    parser.add_argument("--C", type=float, nargs="+", default=[1.0, 4.0, 16.0], help="inverse regularization")
    args = parser.parse_args(argv)
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    dm = SentimentDataModule(**vars(args.data))
    splits, labels = documents(dm, args.max_length)
    values = numeric_values(labels)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, token_pattern=r"\S+")
    x_train = vectorizer.fit_transform(splits["train"][0])
    print(f"labels {', '.join(labels)}; train {x_train.shape[0]:,} reviews, {x_train.shape[1]:,} features; "
          f"{args.max_length or 'all'} tokens")
    for c in args.C:
        start = time.perf_counter()
        model = LogisticRegression(C=c, max_iter=3000).fit(x_train, splits["train"][1])
        seconds = time.perf_counter() - start
        for split in ("val", "test"):
            if split not in splits:
                continue
            texts, truth = splits[split]
            probs = model.predict_proba(vectorizer.transform(texts))
            predicted = probs.argmax(1)
            line = (f"C {c:g} {split}: acc {100 * accuracy_score(truth, predicted):.2f}, macro F1 "
                    f"{100 * f1_score(truth, predicted, average='macro'):.2f}, ECE "
                    f"{100 * expected_calibration_error(torch.from_numpy(probs), torch.from_numpy(truth)):.2f}")
            if values is not None:
                line += f", MAE {np.abs(values[predicted] - values[truth]).mean():.3f}"
            print(f"{line} ({seconds:.0f} s to fit)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
