#!/usr/bin/env python
"""The linear reference of several labels per text: TF-IDF (1-2 grams) + one-vs-rest logistic regression with a
threshold per label, on GoEmotions' training file (scikit-learn, a benchmark-only dependency; BENCHMARKS.md,
"Several labels per text").

    python scripts/reference_multilabel.py --input ../shared/data/goemotions_train.csv --output goemotions/

Splits the file (``text,labels``, labels joined by ``;``) by a seeded shuffle into ``train.csv``, ``val.csv`` and
``test.csv`` (``--val_fraction`` each for validation and test) in ``--output``, for the project's own commands to
use the same split; chooses each label's threshold for F1 on validation and reports, on the test part, macro and
micro F1, example-based Jaccard, subset accuracy and Hamming loss, for each C. Documents are the project's tokens.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sentiment.data.text import tokenize


def split(frame: pd.DataFrame, fraction: float, seed: int) -> dict[str, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    n = int(round(len(frame) * fraction))
    return {"val": frame.iloc[order[:n]], "test": frame.iloc[order[n:2 * n]], "train": frame.iloc[order[2 * n:]]}


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score, hamming_loss, jaccard_score

    return {"macro_f1": f1_score(truth, predicted, average="macro", zero_division=0),
            "micro_f1": f1_score(truth, predicted, average="micro", zero_division=0),
            "jaccard": jaccard_score(truth, predicted, average="samples", zero_division=1),
            "subset_acc": float((truth == predicted).all(axis=1).mean()),
            "hamming": hamming_loss(truth, predicted)}


def thresholds(truth: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each label's threshold with the best F1 on these texts."""
    grid = np.linspace(0.02, 0.9, 45)
    best = np.empty(truth.shape[1])
    for j in range(truth.shape[1]):
        predicted = probs[:, j, None] >= grid  # texts x grid
        tp = (predicted & truth[:, j, None]).sum(0)
        f1 = 2 * tp / np.maximum(1, predicted.sum(0) + truth[:, j].sum())
        best[j] = grid[int(np.argmax(f1))]
    return best


def main(argv: list[str] | None = None) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="a CSV of text,labels (labels joined by ;)")
    parser.add_argument("--output", type=Path, required=True, help="folder for train.csv, val.csv and test.csv")
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--C", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    args = parser.parse_args(argv)
    frame = pd.read_csv(args.input, keep_default_na=False)
    parts = split(frame, args.val_fraction, args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.to_csv(args.output / f"{name}.csv", index=False)
    sets = {name: [labels.split(";") if labels else [] for labels in part["labels"]] for name, part in parts.items()}
    binarizer = MultiLabelBinarizer().fit(sets["train"])
    truth = {name: binarizer.transform(s).astype(bool) for name, s in sets.items()}
    several = np.mean(truth["train"].sum(1) > 1)
    print(f"{len(frame):,} texts: train {len(parts['train']):,}, val {len(parts['val']):,}, test "
          f"{len(parts['test']):,}; {len(binarizer.classes_)} labels; {several:.1%} of training texts have several")
    vectorizer = TfidfVectorizer(analyzer=lambda text: (lambda t: t + [" ".join(p) for p in zip(t, t[1:])])(
        tokenize(text)), sublinear_tf=True, min_df=2)
    docs = {name: vectorizer.fit_transform(part["text"]) if name == "train" else None for name, part in parts.items()}
    for name in ("val", "test"):
        docs[name] = vectorizer.transform(parts[name]["text"])
    for c in args.C:
        start = time.perf_counter()
        model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000), n_jobs=1).fit(docs["train"],
                                                                                          truth["train"])
        probs = {name: model.predict_proba(docs[name]) for name in ("val", "test")}
        chosen = thresholds(truth["val"], probs["val"])
        for name in ("val", "test"):
            got = scores(truth[name], probs[name] >= chosen)
            print(f"C {c:g} {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in got.items())
                  + (f" ({time.perf_counter() - start:.0f} s)" if name == "test" else ""), flush=True)


if __name__ == "__main__":
    main()
