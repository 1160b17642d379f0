#!/usr/bin/env python
"""Labelled corpora of any size made of IMDb's sentences, for measuring preparation and training at scale
(BENCHMARKS.md, "Corpora a hundred times IMDb").

    python scripts/scale_corpus.py --reviews 400000 --output big/train.csv

Each review joins 6 to 14 sentences drawn (seeded) from IMDb training reviews of one class, and has that class's
label: distinct texts, with IMDb's words and phrasing, so that the vocabulary and the bag of n-grams grow as they do
on real text. Rows are written as they are made (``text,label``), in ``--chunk`` rows at a time: memory stays that of
IMDb's sentences whatever the size asked for.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np

from sentiment.data.sources import read_imdb

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "aclImdb_train.tar.gz"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """A review's sentences (line breaks as spaces)."""
    text = text.replace("<br />", " ")
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) > 1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="IMDb archive or aclImdb/ folder")
    parser.add_argument("--reviews", type=int, required=True, help="how many reviews to write")
    parser.add_argument("--output", type=Path, required=True, help="the CSV file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=10_000, help="rows made and written at a time")
    args = parser.parse_args(argv)
    reviews = read_imdb(args.archive, ("train",))["train"]
    pools = {label: [s for text, y in zip(reviews.texts, reviews.labels) if y == label for s in sentences(text)]
             for label in ("neg", "pos")}
    names = {"neg": "negative", "pos": "positive"}
    rng = np.random.default_rng(args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for start in range(0, args.reviews, args.chunk):
            n = min(args.chunk, args.reviews - start)
            labels = rng.integers(0, 2, n)
            counts = rng.integers(6, 15, n)
            rows = []
            for label, count in zip(labels, counts):
                pool = pools["pos" if label else "neg"]
                picked = rng.integers(0, len(pool), count)
                rows.append((" ".join(pool[i] for i in picked), names["pos" if label else "neg"]))
            writer.writerows(rows)
    size = args.output.stat().st_size
    print(f"Wrote {args.reviews:,} reviews to {args.output} ({size / 1e6:.0f} MB) from "
          f"{sum(map(len, pools.values())):,} IMDb sentences")


if __name__ == "__main__":
    main()
