"""Probabilities users can trust: the expected calibration error, and temperature scaling (Guo et al., 2017).

A network trained to a low loss is often over-confident: of the answers it gives with 99% probability, fewer
than 99% are right. Dividing the logits by one number, the temperature, fitted on held-out reviews, fixes
most of that without changing a single answer (the ranking of the classes stays). Plain PyTorch.
"""

from __future__ import annotations

import math

import torch

from sentiment.network.model import probabilities

BINS = 15
MIN_REVIEWS = 200  # fewer held-out reviews measure the error, and fit the temperature, too roughly to act on


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> float:
    """The share-weighted gap between confidence and accuracy over ``bins`` equal-width confidence bins: how far
    the probability of the predicted class is, on average, from how often such answers are right."""
    confidence, predicted = probs.max(dim=1)
    right = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    which = torch.bucketize(confidence, edges[1:-1], right=True)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.float().mean().item() * abs(confidence[in_bin].mean().item() - right[in_bin].mean().item())
    return error


def _nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    p = probabilities(logits / temperature).clamp_min(1e-12)
    return -p.gather(1, labels[:, None]).log().mean().item()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature (0.05 to 20) that minimizes the log loss of ``logits`` (either form) on ``labels``:
    a golden-section search over its logarithm, deterministic and a few milliseconds on thousands of reviews."""
    logits, labels = logits.detach().float().cpu(), labels.detach().cpu().long()
    low, high = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = _nll(logits, labels, math.exp(a)), _nll(logits, labels, math.exp(b))
    for _ in range(40):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _nll(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll(logits, labels, math.exp(b))
    return math.exp((low + high) / 2)


def calibrate(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
    """``(temperature, error before, error after)``: the fitted temperature if it lowers the expected calibration
    error on these reviews, else 1.0 (also on fewer than ``MIN_REVIEWS`` reviews, or when every answer is right:
    nothing then tells how sure to be)."""
    labels = labels.detach().cpu().long()
    logits = logits.detach().float().cpu()
    probs = probabilities(logits)
    before = expected_calibration_error(probs, labels)
    # with no wrong answer, any sharper temperature looks better
    if len(labels) < MIN_REVIEWS or bool((probs.argmax(1) == labels).all()):
        return 1.0, before, before
    temperature = fit_temperature(logits, labels)
    after = expected_calibration_error(probabilities(logits / temperature), labels)
    return (temperature, before, after) if after < before else (1.0, before, before)


def best_thresholds(probs: torch.Tensor, targets: torch.Tensor, default: float = 0.5) -> torch.Tensor:
    """For label sets: each label's threshold that gives it the highest F1 on these texts (``probs`` and 0/1
    ``targets``, B x labels), halfway between the lowest probability it answers and the next below; ``default``
    for a label no text has (its F1 is then 0 at any threshold)."""
    probs, targets = probs.detach().float().cpu(), targets.detach().cpu().bool()
    thresholds = torch.full((probs.shape[1],), default)
    for k in range(probs.shape[1]):
        positives = int(targets[:, k].sum())
        if positives == 0:
            continue
        order = probs[:, k].argsort(descending=True)
        p, hit = probs[order, k], targets[order, k].float()
        true_positives = hit.cumsum(0)
        answered = torch.arange(1, len(p) + 1, dtype=torch.float32)
        f1 = 2 * true_positives / (answered + positives)
        f1[:-1][p[:-1] == p[1:]] = -1  # a cut between equal probabilities is no threshold
        best = int(f1.argmax())
        below = p[best + 1] if best + 1 < len(p) else p[best] - 1e-6
        thresholds[k] = float((p[best] + below) / 2)
    return thresholds
