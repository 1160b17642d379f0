#!/usr/bin/env python
"""Speed, measured side by side in one run, each figure as a ratio against its reference.

    python scripts/benchmark.py                   # full run on the IMDb training archive; updates BENCHMARKS.md
    python scripts/benchmark.py --quick           # a small, fast pass (used by the test suite); writes nothing
    python scripts/benchmark.py --only tokenize   # one section: tokenize, train, lightning, predict, serve, cores,
                                                  # coldfit; coldsemi (configs/imdb_semi.yaml cold, 10-15
                                                  # minutes) runs only when named

No network: the reviews come from ../shared/data/aclImdb_train.tar.gz or --archive. Every model is built by the
project's own code from configs/ (the default recipe, configs/imdb.yaml, with overlays); one module per section
in scripts/bench/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import ROOT  # noqa: E402

DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "aclImdb_train.tar.gz"
ALL_SECTIONS = ("tokenize", "train", "lightning", "predict", "serve", "cores", "coldfit")
NAMED_ONLY = ("coldsemi",)  # sections a run makes only when --only names them


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="IMDb archive or aclImdb/ folder")
    parser.add_argument("--quick", action="store_true", help="2,000 reviews and a few steps; writes nothing")
    parser.add_argument("--only", default=",".join(ALL_SECTIONS),
                        help="comma-separated sections; a partial run prints its rows but writes nothing")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="file whose table is replaced")
    parser.add_argument("--original-loop", type=Path, help=argparse.SUPPRESS)  # OriginalProcess's child
    args = parser.parse_args(argv)
    if args.original_loop:
        from bench.training import original_loop_worker
        return original_loop_worker(args.original_loop)  # before configure_cpu: the original ran without it
    if not args.archive.exists():  # checked before the imports of Lightning, which take seconds
        parser.error(f"{args.archive}: no such archive (pass --archive)")
    sections = set(args.only.split(","))
    if unknown := sections - set(ALL_SECTIONS) - set(NAMED_ONLY):
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; expected some of "
                     f"{', '.join(ALL_SECTIONS + NAMED_ONLY)}")

    import numpy as np

    from sentiment.cpu import configure_cpu
    configure_cpu()  # as `sentiment` does; both sides of every comparison run in this process

    from bench.common import Report, recipe, write_reviews

    from bench.coldfit import bench_cold_fit
    from bench.cores import bench_cores
    from bench.overhead import bench_lightning
    from bench.predicting import bench_predict
    from bench.serving import bench_serve
    from bench.tokenizing import bench_tokenize
    from bench.training import bench_train
    from sentiment.data.labels import BINARY, LabelReader
    from sentiment.data.sources import read_imdb

    train = read_imdb(args.archive, ("train",))["train"]
    texts, labels = train.texts, LabelReader(BINARY).read(train.labels, str(args.archive), train.where)  # 0/1
    if args.quick:
        pick = np.random.default_rng(0).permutation(len(texts))[:2000]
        texts, labels = [texts[i] for i in pick], labels[pick]
    steps = 5 if args.quick else 100
    report = Report(f"python scripts/benchmark.py{' --quick' if args.quick else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_file = write_reviews(work / "reviews.csv", texts, labels)
        cli = recipe(train_file, work / "default")  # the default recipe, as `sentiment fit` builds it
        if "tokenize" in sections:
            bench_tokenize(texts, cli, report, repeat=1 if args.quick else 3)
        if "train" in sections:
            bench_train(texts, labels, cli, report, steps)
        if "lightning" in sections:
            bench_lightning(cli, report, steps)
        if sections & {"predict", "serve"}:
            ckpt = bench_predict(texts, labels, train_file, work, report, rounds=1 if args.quick else 3,
                                 warmup=0 if args.quick else 1)
            if "serve" in sections:
                bench_serve(texts, ckpt, report, requests=200 if args.quick else 2000)
        if "cores" in sections:
            bench_cores(args.archive, report, steps=4 if args.quick else 100, quick=args.quick)
        if "coldfit" in sections:
            bench_cold_fit(args.archive, texts, labels, report, quick=args.quick)
        if "coldsemi" in sections:
            bench_cold_fit(args.archive, texts, labels, report, quick=args.quick, overlay="imdb_semi.yaml", bound=20)
    print(report.table())
    if not args.quick and sections >= set(ALL_SECTIONS):  # the table is one run's, never a patchwork
        report.write(args.output)
        print(f"updated {args.output}")


if __name__ == "__main__":
    main()
