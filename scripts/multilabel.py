#!/usr/bin/env python
"""Several labels per text, measured: the default recipe with ``--data.encoding.multi_label true`` on GoEmotions'
training file, over seeds, and the speed of its answers against the same network answering one label (BENCHMARKS.md,
"Several labels per text").

    python scripts/multilabel.py --input ../shared/data/goemotions_train.csv --output goemotions/ --seeds 1 2 3

Splits the file as ``scripts/reference_multilabel.py`` does (the same seeded shuffle: ``train.csv``, ``val.csv`` and
``test.csv`` in ``--output``), fits ``sentiment fit`` on the training part with the validation part as
``--data.val_file`` (each label's threshold is chosen there) for each seed, each fit timed as a whole command, and
reports the best checkpoint's figures on validation (where the thresholds were chosen) and on the test part (`sentiment
test`). Extra ``fit`` options follow ``--``. Then times ``Predictor.predict`` over the validation texts in turns: the
last model as it answers (label sets), and its network read as one label per text (a softmax over the same outputs).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_multilabel import split  # noqa: E402

KEYS = ("f1", "f1_micro", "jaccard", "subset_acc", "hamming")


def figures(output: str, stage: str) -> dict[str, float]:
    """The metrics a `sentiment validate` or `test` printed."""
    found = {}
    for key in KEYS:
        match = re.search(rf"^\s*{stage}/{key}\s+([0-9.]+)\s*$", output, re.M)
        if match:
            found[key] = float(match.group(1))
    return found


def run(args: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "sentiment", *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"sentiment {args[0]} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def speed(best: Path, texts: list[str], turns: int = 5) -> tuple[float, float]:
    """Texts a second, label sets and one label, the median of ``turns`` turns each."""
    import copy

    from sentiment.inference.predictor import Predictor

    sets = Predictor.from_checkpoint(best)
    net = copy.deepcopy(sets.net)
    net.multi_label = False  # the same outputs, read as one label per text
    one = Predictor(net, sets.encoder, sets.labels, sets.temperature)
    one.net.keep_inference_casts()
    rates: dict[str, list[float]] = {"sets": [], "one": []}
    for predictor in (sets, one):  # warm up: the worker threads, the first batches
        predictor.predict(texts[:2000])
    for turn in range(turns):
        pair = (("sets", sets), ("one", one))
        for name, predictor in pair[::-1] if turn % 2 else pair:  # each first in half the turns
            start = time.perf_counter()
            predictor.predict(texts)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    return statistics.median(rates["sets"]), statistics.median(rates["one"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="a CSV of text,labels (labels joined by ;)")
    parser.add_argument("--output", type=Path, required=True, help="folder for the split files and the runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--split_seed", type=int, default=42)
    parser.add_argument("fit_options", nargs="*", help="more `sentiment fit` options (after --)")
    args = parser.parse_args(argv)
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    parts = split(pd.read_csv(args.input, keep_default_na=False), args.val_fraction, args.split_seed)
    for name, part in parts.items():
        part.to_csv(out / f"{name}.csv", index=False)
    rows = []
    for seed in args.seeds:
        root = out / "runs" / f"seed{seed}"
        start = time.perf_counter()
        run(["fit", "--data.data_dir", str(out), "--data.train_file", str(out / "train.csv"), "--data.val_file",
             str(out / "val.csv"), "--data.label_column", "labels", "--data.encoding.multi_label", "true",
             "--seed_everything", str(seed), "--trainer.default_root_dir", str(root),
             "--trainer.enable_progress_bar", "false", *args.fit_options])
        seconds = time.perf_counter() - start
        run_dir = max((root / "lightning_logs").glob("version_*"), key=lambda p: p.stat().st_mtime)
        best = run_dir / "checkpoints" / "best.ckpt"
        common = ["--ckpt_path", str(best), "--trainer.default_root_dir", str(root / "eval"),
                  "--trainer.enable_progress_bar", "false"]
        val = figures(run(["validate", "--data.val_file", str(out / "val.csv"), *common]), "val")
        test = figures(run(["test", "--data.test_file", str(out / "test.csv"), *common]), "test")
        rows.append((seed, seconds, val, test))
        print(f"seed {seed}: fit {seconds:.0f} s; val " + ", ".join(f"{k} {v:.4f}" for k, v in val.items())
              + "; test " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()), flush=True)
    for stage in (2, 3):
        means = {k: statistics.mean(r[stage][k] for r in rows) for k in KEYS}
        spread = {k: statistics.stdev(r[stage][k] for r in rows) if len(rows) > 1 else 0.0 for k in KEYS}
        print(f"mean {'val' if stage == 2 else 'test'}: " + ", ".join(f"{k} {means[k]:.4f} (sd {spread[k]:.4f})"
                                                                      for k in KEYS))
    print(f"fit: {', '.join(f'{r[1]:.0f}' for r in rows)} s")
    sets, one = speed(best, parts["val"]["text"].tolist())
    print(f"Predictor.predict on {len(parts['val']):,} texts: label sets {sets:,.0f} texts/s, the same network "
          f"answering one label {one:,.0f} texts/s: {sets / one:.2f}x")


if __name__ == "__main__":
    main()
