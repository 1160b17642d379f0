#!/usr/bin/env python
"""How far a checkpoint's probabilities are from how often its answers are right: the expected calibration error
on the seeded validation split, for BENCHMARKS.md.

    python scripts/calibration.py --ckpt_path lightning_logs/version_0/checkpoints/best.ckpt --data.data_dir data

The data options are `sentiment fit`'s own; give those the model was trained with. Prints the error of the raw
probabilities, with the temperature stored in the checkpoint (fitted on the same reviews it is measured on, so
flattering), and cross-fitted (the temperature fitted on one half of the split, measured on the other, and the
other way round): the honest figure. The same on short snippets, the first ``--snippet`` tokens of each review.
"""

from __future__ import annotations

import argparse
import sys

import torch
from jsonargparse import ArgumentParser

from sentiment.training.calibration import expected_calibration_error, fit_temperature
from sentiment.data.datamodule import SentimentDataModule
from sentiment.network.model import probabilities
from sentiment.inference.predictor import Predictor
from sentiment.data.text import tokenize


def logits_of(predictor: Predictor, texts: list[str]) -> torch.Tensor:
    out = []
    with predictor.running():
        for i in range(0, len(texts), predictor.batch_size):
            out.append(predictor.net(**predictor.encoder.model_inputs(texts[i: i + predictor.batch_size])).float())
    return torch.cat(out)


def report(name: str, logits: torch.Tensor, labels: torch.Tensor, stored: float) -> None:
    half = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)) < len(labels) // 2
    crossed = torch.empty(len(labels), logits.shape[1] if logits.dim() == 2 else 2)
    for fit, measure in ((half, ~half), (~half, half)):
        crossed[measure] = probabilities(logits[measure] / fit_temperature(logits[fit], labels[fit]))
    raw = probabilities(logits)
    right = (raw.argmax(1) == labels).float().mean().item()
    sure = raw.max(1).values > 0.99
    print(f"{name}: {len(labels):,} reviews, accuracy {100 * right:.1f}%; ECE raw "
          f"{100 * expected_calibration_error(raw, labels):.2f}%, with the checkpoint's temperature {stored:.2f} "
          f"{100 * expected_calibration_error(probabilities(logits / stored), labels):.2f}%, cross-fitted "
          f"{100 * expected_calibration_error(crossed, labels):.2f}%; raw answers over 99%: "
          f"{100 * sure.float().mean():.0f}% of them, right "
          f"{100 * (raw.argmax(1) == labels)[sure].float().mean():.1f}%")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="config")
    parser.add_argument("--ckpt_path", required=True)
    parser.add_class_arguments(SentimentDataModule, "data")
    parser.add_argument("--snippet", type=int, default=20, help="tokens of a short snippet")
    args = parser.parse_args(argv)
    reviews, classes, _ = SentimentDataModule(**vars(args.data)).corpus.read_splits()
    predictor = Predictor.from_checkpoint(args.ckpt_path, threads=1)
    texts, labels = reviews["val"].texts, torch.from_numpy(classes["val"])
    report("validation", logits_of(predictor, texts), labels, predictor.temperature)
    snippets = [" ".join(tokenize(t)[: args.snippet]) for t in texts]
    report(f"snippets (first {args.snippet} tokens)", logits_of(predictor, snippets), labels, predictor.temperature)


if __name__ == "__main__":
    sys.exit(main())
