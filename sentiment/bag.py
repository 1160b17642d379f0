"""The whole review as a bag of n-grams: which words, word pairs and word triples occur anywhere in it.

The recurrent network reads at most ``max_length`` tokens; the bag reads every token the tokenizer gives, so
that a verdict in the middle of a long review still counts. Beside the network it is a linear model in the
spirit of NBSVM (Wang & Manning, 2012): each n-gram present (once, however often it occurs) adds its weight to
every class's logit, and the weights start from, and are scaled by, the n-gram's naive-Bayes log-count ratio.

    raw text -> tokens (all of them) -> n-gram hashes -> ids in the ``NgramTable`` -> ``SentimentNet``'s bag

An n-gram is named by a 64-bit hash of its words (``zlib.crc32`` of each token's UTF-8 bytes, folded in order
with the n-gram's length), so the table holds numbers, not strings: the n-grams of the training split seen in
at least ``min_count`` reviews, sorted, an n-gram's id being its position + 1 (0 pads). An n-gram not in the
table adds nothing. Plain numpy and torch: no Lightning.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch

from sentiment.errors import DataError

BAG_VERSION = 1  # bump when the hashing changes: it is part of every cache key and checkpoint
_FOLD = np.uint64(0x9E3779B97F4A7C15)  # an odd 64-bit multiplier (the golden ratio's), mixing word after word
_CHUNK = 2000  # reviews hashed at a time: bounds the memory of a corpus's n-grams


def review_hashes(tokens: Sequence[Sequence[bytes]], orders: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct n-grams (1 to ``orders`` words) of each review, as sorted uint64 hashes given end to end,
    and how many each review has."""
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    words = word_hashes(chain.from_iterable(tokens), int(lengths.sum()))
    review = np.repeat(np.arange(len(tokens)), lengths)
    hashes, owners = [], []
    for n in range(1, orders + 1):
        h = ngram_hashes(words, n)
        m = len(h)
        whole = review[:m] == review[n - 1: n - 1 + m]  # the n words lie in one review
        hashes.append(h[whole])
        owners.append(review[:m][whole])
    if not hashes:
        return np.zeros(0, dtype=np.uint64), np.zeros(len(tokens), dtype=np.int64)
    h, owner = np.concatenate(hashes), np.concatenate(owners)
    order = np.lexsort((h, owner))
    h, owner = h[order], owner[order]
    first = np.ones(len(h), dtype=bool)
    first[1:] = (h[1:] != h[:-1]) | (owner[1:] != owner[:-1])
    return h[first], np.bincount(owner[first], minlength=len(tokens))


def word_hashes(tokens: Iterable[bytes], count: int = -1) -> np.ndarray:
    """Each token's 32-bit hash (``zlib.crc32``), as uint64."""
    return np.fromiter(map(zlib.crc32, tokens), dtype=np.uint64, count=count)


def ngram_hashes(words: np.ndarray, n: int) -> np.ndarray:
    """The hash of the n-gram starting at each position of ``words`` (word hashes; ``len(words) - n + 1`` of them)."""
    m = max(0, len(words) - n + 1)
    h = np.full(m, n, dtype=np.uint64)
    with np.errstate(over="ignore"):  # the hash wraps around 2**64 on purpose
        for k in range(n):
            h = h * _FOLD + words[k: k + m]
    return h


def word_shares(tokens: Sequence[bytes], table: NgramTable, contributions: np.ndarray) -> np.ndarray:
    """Each token's exact share of a bag's logit: every known n-gram's contribution (``contributions[id]``, what
    its presence adds to the logit) split equally among the words of all its occurrences in the review. The
    shares sum to the logit."""
    words = word_hashes(tokens, len(tokens))
    shares = np.zeros(len(tokens))
    for n in range(1, table.orders + 1):
        ids = table.lookup(ngram_hashes(words, n))
        if not len(ids):
            break
        _, where, occurrences = np.unique(ids, return_inverse=True, return_counts=True)
        each = np.where(ids > 0, contributions[ids] / (occurrences[where] * n), 0.0)
        for k in range(n):
            shares[k: k + len(ids)] += each
    return shares


@dataclass(eq=False)
class NgramTable:
    """The n-grams a bag knows: sorted uint64 hashes (an n-gram's id is its position + 1; 0 pads).

    It travels inside checkpoints beside the vocabulary and in an ONNX export's metadata (``to_dict``/``from_dict``:
    the hashes as one base64 string, which JSON and torch's weights-only unpickler both read quickly).
    """

    hashes: np.ndarray
    orders: int = 3

    def __len__(self) -> int:
        return len(self.hashes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NgramTable) and self.orders == other.orders and np.array_equal(self.hashes,
                                                                                                other.hashes)

    @classmethod
    def build(cls, hashes: np.ndarray, min_count: int, orders: int) -> NgramTable:
        """The n-grams found in at least ``min_count`` reviews, from ``review_hashes`` of those reviews."""
        found, counts = np.unique(hashes, return_counts=True)
        return cls(found[counts >= min_count], orders)

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """The id of each hash (0 where the n-gram is not in the table)."""
        if not len(self.hashes):
            return np.zeros(len(hashes), dtype=np.int64)
        pos = np.searchsorted(self.hashes, hashes).clip(max=len(self.hashes) - 1)
        return np.where(self.hashes[pos] == hashes, pos + 1, 0)

    def encode(self, tokens: Sequence[Sequence[bytes]]) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the known n-grams of each review (ascending, each once), end to end, and their counts."""
        return self.known(*review_hashes(tokens, self.orders))

    def known(self, hashes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reviews' n-gram hashes (end to end, ``counts`` each) as the ids of those in the table, and their counts."""
        ids = self.lookup(hashes)
        found = ids > 0
        owner = np.repeat(np.arange(len(counts)), counts)
        return ids[found].astype(np.int32), np.bincount(owner[found], minlength=len(counts))

    def to_dict(self) -> dict:
        return {"hashes": base64.b64encode(self.hashes.astype("<u8").tobytes()).decode("ascii"),
                "orders": self.orders, "bag_version": BAG_VERSION}

    @classmethod
    def from_dict(cls, d: Mapping) -> NgramTable:
        if d.get("bag_version") != BAG_VERSION:
            raise DataError(f"this n-gram table was saved with bag version {d.get('bag_version')}; this sentiment "
                            f"release reads version {BAG_VERSION}")
        return cls(np.frombuffer(base64.b64decode(d["hashes"]), dtype="<u8").astype(np.uint64), int(d["orders"]))


def corpus_hashes(tokens: Iterable[Sequence[bytes]], orders: int) -> tuple[np.ndarray, np.ndarray]:
    """``review_hashes`` of a corpus of any size, tokenized and hashed ``_CHUNK`` reviews at a time (the token
    lists of a whole corpus would take ten times the memory of its hashes)."""
    hashes, counts = [np.zeros(0, dtype=np.uint64)], [np.zeros(0, dtype=np.int64)]
    for chunk in _chunks(tokens):
        h, c = review_hashes(chunk, orders)
        hashes.append(h)
        counts.append(c)
    return np.concatenate(hashes), np.concatenate(counts)


def log_count_ratios(ids: np.ndarray, counts: np.ndarray, classes: np.ndarray, size: int, num_classes: int,
                     alpha: float = 1.0) -> np.ndarray:
    """Naive Bayes log-count ratios of the n-grams ``0..size`` (row 0, padding, is zero), from the reviews'
    n-gram ids (``ids`` end to end, ``counts`` per review) and classes: for two classes one column, the second
    class against the first (NBSVM's r); for more, one column per class, that class against the others.
    ``alpha`` smooths every count (Laplace)."""
    owner_class = np.repeat(classes, counts)
    present = np.zeros((size + 1, num_classes))
    np.add.at(present, (ids, owner_class), 1.0)
    present += alpha
    present[0] = 0
    if num_classes == 2:
        p, q = present[:, 1], present[:, 0]
        ratios = np.log(p / p[1:].sum()) - np.log(q / q[1:].sum())
        ratios = ratios[:, None]
    else:
        rest = present.sum(1, keepdims=True) - present - alpha * (num_classes - 2)  # the others, smoothed once
        ratios = np.zeros_like(present)
        ratios[1:] = np.log(present[1:] / present[1:].sum(0)) - np.log(rest[1:] / rest[1:].sum(0))
    ratios[0] = 0
    return ratios.astype(np.float32)


def pad_bags(ids: np.ndarray, counts: np.ndarray) -> torch.Tensor:
    """Bags given end to end as a B x M tensor of ids right-padded with 0 (M: the largest bag, at least 1)."""
    width = max(1, int(counts.max())) if len(counts) else 1
    out = np.zeros((len(counts), width), dtype=np.int64)
    out[np.arange(width)[None, :] < counts[:, None]] = ids
    return torch.from_numpy(out)


def _chunks(items: Iterable) -> Iterable[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
