"""Pseudo labels: IMDb's unlabelled reviews that a trained model is sure of, with its labels, to train on.

The corpus appends them to its training split when ``unlabelled.pseudo_labels`` names the model, which is handed in
as a ``Labeller`` (a ``Predictor``: ``sentiment.training.selftrain`` and the CLI build one); validation and test
never see them. Nothing here imports inference: the data room only asks a labeller for answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sentiment.errors import DataError
from sentiment.data.labels import LabelReader
from sentiment.data.sources import Reviews, read_imdb_unlabelled


class Labeller(Protocol):
    """What labels unlabelled reviews: a trained model's classes, and its answers (``Predictor`` is one)."""

    labels: tuple[str, ...]

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """``[{"label": ..., "score": ...}, ...]`` in input order, ``score`` the label's probability."""


def confidently_labelled(labeller: Labeller, name: str, source: Path, reader: LabelReader, confidence: float
                         ) -> tuple[Reviews, np.ndarray]:
    """The unlabelled reviews of the IMDb ``source`` to which ``labeller`` (the model in checkpoint ``name``) gives
    its label with at least ``confidence``, with those labels, and their classes (``reader``'s, the training data's
    label set)."""
    if list(labeller.labels) != list(reader.labels):
        raise DataError(f"{name}: the model's labels are {', '.join(labeller.labels)} but the training data's "
                        f"are {', '.join(reader.labels)}")
    texts = read_imdb_unlabelled(source)
    answers = labeller.predict(texts)
    keep = [i for i, a in enumerate(answers) if a["score"] >= confidence]
    sure = Reviews([texts[i] for i in keep], [answers[i]["label"] for i in keep],
                   [f"{source}: unlabelled review {i + 1}" for i in keep])
    return sure, reader.read(sure.labels, name, sure.where)
