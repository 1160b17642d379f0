"""Pseudo labels: IMDb's unlabelled reviews that a trained model is sure of, with its labels, to train on.

The data module appends them to its training split when ``pseudo_labels`` names the model (``sentiment.selftrain``
trains one: the teacher); validation and test never see them. Plain PyTorch through the ``Predictor``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sentiment.errors import DataError
from sentiment.labels import LabelReader
from sentiment.predictor import Predictor
from sentiment.sources import Reviews, read_imdb_unlabelled


def confidently_labelled(checkpoint: str | Path, source: Path, reader: LabelReader, confidence: float
                    ) -> tuple[Reviews, np.ndarray]:
    """The unlabelled reviews of the IMDb ``source`` to which the model in ``checkpoint`` gives its label with at
    least ``confidence``, with those labels, and their classes (``reader``'s, the training data's label set)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint (--data.pseudo_labels)")
    predictor = Predictor.from_checkpoint(path)
    if list(predictor.labels) != list(reader.labels):
        raise DataError(f"{path}: the model's labels are {', '.join(predictor.labels)} but the training data's "
                        f"are {', '.join(reader.labels)}")
    texts = read_imdb_unlabelled(source)
    answers = predictor.predict(texts)
    keep = [i for i, a in enumerate(answers) if a["score"] >= confidence]
    sure = Reviews([texts[i] for i in keep], [answers[i]["label"] for i in keep],
                   [f"{source}: unlabelled review {i + 1}" for i in keep])
    return sure, reader.read(sure.labels, str(checkpoint), sure.where)
