"""Label sets: which classes a training file has, in which order, and each review's class.

A label set is a tuple of names. It is read from the training split (or given with ``--data.encoding.labels``) and
travels in checkpoints as a plain list, so a trained model answers with the names it was trained on.

With several labels per text (``multi_label``), a text's labels are a set: a cell split at the separator, a JSON
list, or a fastText line's ``__label__`` tokens; ``LabelReader.read_sets`` reads them as rows of 0/1, a column per
label.

Order: numbers numerically (star ratings stay in rating order); the polarity words in their natural order
(negative < neutral < positive); other strings alphabetically. Binary files keep the project's old reading:
0/1, pos/neg, positive/negative and true/false, in any case, are ``negative`` and ``positive``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from sentiment.errors import DataError

BINARY = ("negative", "positive")  # a binary model's one logit: > 0 is the second
POLARITY = ("negative", "neutral", "positive")
SYNONYMS = {"0": "negative", "1": "positive", "neg": "negative", "pos": "positive", "negative": "negative",
            "positive": "positive", "false": "negative", "true": "positive", "neutral": "neutral", "neu": "neutral"}


def cells(value, separator: str) -> list[str]:
    """The labels of one text's label cell: a list's items (JSONL, fastText), or a string split at ``separator``;
    empty or missing: none."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(separator)
    return [text for text in (str(item).strip() for item in items if item is not None) if text]


def looks_multiple(values: Sequence, source: str, where: Sequence[str], separator: str) -> None:
    """Warn, once, at the first value that looks like several labels, where a text has one label: it is read as one
    class of its own, which ``multi_label`` would read as a set."""
    marks = {separator, ",", ";", "|"}
    # each distinct value looked at once (a corpus has a few), its first row found only if it looks like several; a
    # list is several labels, which read_sets reads and read refuses
    distinct = {str(v) for v in values if not isinstance(v, (list, tuple))}
    suspects = {text for text in distinct if any(mark in text and len(cells(text, mark)) > 1 for mark in marks)}
    if not suspects:
        return
    i, text = next((i, str(v)) for i, v in enumerate(values) if not isinstance(v, (list, tuple)) and str(v) in suspects)
    warnings.warn(f"{source}: {where[i]}: label {text!r} looks like several labels; it is read as one class of its own "
                  "(several labels per text: --data.encoding.multi_label true)", stacklevel=3)


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _number_name(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


def _canonical(values: set[str]) -> dict[str, str]:
    """How the distinct stripped values found in a training split are named, by the rules of the module."""
    lowered = {v: v.lower() for v in values}
    if all(low in SYNONYMS for low in lowered.values()):
        named = {v: SYNONYMS[low] for v, low in lowered.items()}
        if set(named.values()) <= set(POLARITY):
            return named
    numbers = {v: _number(v) for v in values}
    if all(n is not None for n in numbers.values()):
        return {v: _number_name(n) for v, n in numbers.items()}
    return {v: v for v in values}


def order(names: set[str]) -> tuple[str, ...]:
    """Numbers numerically, the polarity words in their natural order, other strings alphabetically."""
    if names <= set(POLARITY):
        return tuple(n for n in POLARITY if n in names)
    numbers = {n: _number(n) for n in names}
    if all(v is not None for v in numbers.values()):
        return tuple(sorted(names, key=numbers.__getitem__))
    return tuple(sorted(names))


def numeric_values(labels: Sequence[str]) -> np.ndarray | None:
    """Each label's value where every label is a number (ratings), else None."""
    values = [_number(label) for label in labels]
    return None if any(v is None for v in values) else np.array(values, dtype=np.float64)


class LabelReader:
    """Turns raw label values into class indices for one label set, naming the first value it cannot place.

    Args:
        labels: the label set, in order.
    """

    def __init__(self, labels: Sequence[str]) -> None:
        if len(labels) < 2:
            raise DataError(f"a classifier needs at least two labels, got {list(labels)}")
        if len(set(labels)) != len(labels):
            raise DataError(f"the labels {list(labels)} name a class twice")
        self.labels = tuple(labels)
        index = {name: i for i, name in enumerate(self.labels)}
        self._exact = index
        # a value may also be written in another case, as a number of the same value, or as a synonym
        self._loose = {name.lower(): i for name, i in index.items()}
        for synonym, name in SYNONYMS.items():
            if name in index:
                self._loose.setdefault(synonym, index[name])
        for name, i in index.items():
            if (n := _number(name)) is not None:
                self._loose.setdefault(_number_name(n), i)

    @classmethod
    def from_training(cls, values: Sequence, given: Sequence[str] | None = None,
                      source: str = "the training data", separator: str | None = None) -> LabelReader:
        """The label set of a training split's raw values (``given`` fixes the set and its order); with a
        ``separator``, each value is a set of labels (``cells``)."""
        if given:
            return cls([str(g).strip() for g in given])
        if separator is not None:
            named = set(_canonical({label for value in values for label in cells(value, separator)}).values())
            if len(named) < 2:
                raise DataError(f"{source}: the training texts have {len(named)} label(s) "
                                f"({', '.join(sorted(named)) or 'none'}); a multi-label classifier needs at least two")
            return cls(order(named))
        named = set(_canonical({str(v).strip() for v in values if not isinstance(v, (list, tuple))}).values())
        if len(named) < 2:
            raise DataError(f"{source}: every training review has label {', '.join(named) or 'none'}; a classifier "
                            "needs at least two classes")
        return cls(order(named))

    def index(self, value) -> int | None:
        text = str(value).strip()
        if text in self._exact:
            return self._exact[text]
        low = text.lower()
        if low in self._loose:
            return self._loose[low]
        number = _number(text)
        return self._loose.get(_number_name(number)) if number is not None else None

    def read(self, values: Sequence, source: str, where: Sequence[str]) -> np.ndarray:
        """Class indices of ``values``; a value outside the set is a one-line error naming the source, the row
        (``where[i]``), the value and the known labels."""
        out = np.empty(len(values), dtype=np.int64)
        cache: dict = {}
        for i, value in enumerate(values):
            if isinstance(value, (list, tuple)):
                raise DataError(f"{source}: {where[i]}: several labels ({', '.join(map(str, value))}); to train "
                                "several labels per text, set --data.encoding.multi_label true")
            key = str(value)
            found = cache[key] if key in cache else cache.setdefault(key, self.index(value))
            if found is None:
                raise DataError(f"{source}: {where[i]}: label {value!r} is not one of the labels "
                                f"{', '.join(self.labels)}")
            out[i] = found
        return out

    def classes(self, values: Sequence, source: str, where: Sequence[str], separator: str | None = None
                ) -> np.ndarray:
        """``read``'s class indices, or with a ``separator`` ``read_sets``' rows."""
        return self.read(values, source, where) if separator is None else self.read_sets(values, separator, source,
                                                                                         where)

    def read_sets(self, values: Sequence, separator: str, source: str, where: Sequence[str]) -> np.ndarray:
        """Each text's set of labels (``cells``) as a row of 0/1, a column per label (N x labels, uint8); a label
        outside the set is a one-line error naming the source, the row and the known labels."""
        out = np.zeros((len(values), len(self.labels)), dtype=np.uint8)
        for i, value in enumerate(values):
            for label in cells(value, separator):
                k = self.index(label)
                if k is None:
                    raise DataError(f"{source}: {where[i]}: label {label!r} is not one of the labels "
                                    f"{', '.join(self.labels)}")
                out[i, k] = 1
        return out
