"""A compact, fast LSTM sentiment classifier for movie reviews, trained and served on CPUs.

Names are imported when first used, so that ``import sentiment.network.model`` (plain PyTorch) loads no Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "SentimentClassifier": "sentiment.training.classifier",
    "configure_cpu": "sentiment.cpu",
    "SentimentDataModule": "sentiment.data.datamodule",
    "DataError": "sentiment.errors",
    "Predictor": "sentiment.inference.predictor",
    "self_train": "sentiment.training.selftrain",
    "SentimentNet": "sentiment.network.model",
    "TextEncoder": "sentiment.data.text",
    "Vocab": "sentiment.data.text",
    "tokenize": "sentiment.data.text",
    "truncate": "sentiment.data.text",
}
__all__ = sorted(_HOMES)

def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'sentiment' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
