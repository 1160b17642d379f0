"""The whole review as a bag of n-grams: which words, word pairs and word triples occur anywhere in it.

The recurrent network reads at most ``max_length`` tokens; the bag reads every token the tokenizer gives, so
that a verdict in the middle of a long review still counts. Beside the network it is a linear model in the
spirit of NBSVM (Wang & Manning, 2012): each n-gram present (once, however often it occurs) adds its weight to
every class's logit, and the weights are scaled by the n-gram's naive-Bayes log-count ratio.

    raw text -> tokens (all of them) -> word hashes -> n-gram hashes -> ids in the ``NgramTable`` -> the bag

A word is named by ``zlib.crc32`` of its UTF-8 bytes, and an n-gram by a 64-bit hash of its words' (folded in
order with the n-gram's length, then mixed), so the table holds numbers, not strings: the n-grams of the
training split seen in at least ``min_count`` reviews, sorted, an n-gram's id being its position + 1 (0 pads).
An n-gram not in the table adds nothing. An n-gram hash's low ``_REVIEW_BITS`` bits are zero: sorting a hash
with a review's number in them finds each review's distinct n-grams in one sort of plain integers, several
times faster than sorting pairs. Plain numpy: no torch, no Lightning.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from sentiment.errors import DataError

BAG_VERSION = 2  # bump when the hashing changes: it is part of every cache key and checkpoint
_FOLD = np.uint64(0x9E3779B97F4A7C15)  # an odd 64-bit multiplier (the golden ratio's), mixing word after word
_MIX = (np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))  # MurmurHash3's 64-bit finaliser
_SHIFT = np.uint64(33)
_REVIEW_BITS = 11  # a hash's low bits, left zero for a review's number: 2,048 reviews per sort
_HASH_MASK = np.uint64(~((1 << _REVIEW_BITS) - 1) & (2**64 - 1))
_CHUNK = 1 << _REVIEW_BITS  # reviews hashed at a time: bounds the memory of a corpus's n-grams


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
        for multiplier in _MIX:  # every bit of the words reaches the top bits, which the table's index reads
            h ^= h >> _SHIFT
            h *= multiplier
        h ^= h >> _SHIFT
    return h & _HASH_MASK


@dataclass
class Words:
    """Reviews as the hashes of their tokens, end to end (``hashes``), and how many tokens each has: a whole
    corpus in a few bytes a token, tokenized once."""

    hashes: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, tokens: Iterable[Sequence[bytes]]) -> Words:
        """The word hashes of tokenized reviews (a generator is read ``_CHUNK`` reviews at a time)."""
        hashes, lengths = [np.zeros(0, dtype=np.uint64)], [np.zeros(0, dtype=np.int64)]
        for chunk in _chunks(tokens):
            n = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
            hashes.append(word_hashes(chain.from_iterable(chunk), int(n.sum())))
            lengths.append(n)
        return cls(np.concatenate(hashes), np.concatenate(lengths))

    @classmethod
    def concat(cls, parts: Sequence[Words]) -> Words:
        return cls(np.concatenate([p.hashes for p in parts]), np.concatenate([p.lengths for p in parts]))

    def __len__(self) -> int:
        return len(self.lengths)

    def first(self, n: int) -> Words:
        """The first ``n`` reviews."""
        return Words(self.hashes[: int(self.lengths[:n].sum())], self.lengths[:n])

    def chunks(self) -> Iterable[Words]:
        """The reviews, ``_CHUNK`` at a time."""
        ends = np.concatenate([[0], np.cumsum(self.lengths)])
        for lo in range(0, len(self), _CHUNK):
            hi = min(lo + _CHUNK, len(self))
            yield Words(self.hashes[ends[lo]: ends[hi]], self.lengths[lo:hi])

    def ngrams(self, orders: int) -> tuple[np.ndarray, np.ndarray]:
        """Every n-gram (1 to ``orders`` words) of every review, as hashes, and the review each is in."""
        review = np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)
        hashes, owners = [np.zeros(0, dtype=np.uint64)], [np.zeros(0, dtype=np.int64)]
        for n in range(1, orders + 1):
            h = ngram_hashes(self.hashes, n)
            m = len(h)
            whole = review[:m] == review[n - 1: n - 1 + m]  # the n words lie in one review
            hashes.append(h[whole])
            owners.append(review[:m][whole])
        return np.concatenate(hashes), np.concatenate(owners)

    def distinct(self, orders: int) -> np.ndarray:
        """Each n-gram's hash once for every review that has it: what its document frequency counts."""
        found = [np.zeros(0, dtype=np.uint64)]
        for chunk in self.chunks():
            h, owner = chunk.ngrams(orders)
            keyed = np.sort(h | owner.astype(np.uint64))  # a review's repeats of an n-gram are now neighbours
            found.append(keyed[np.concatenate([[True], keyed[1:] != keyed[:-1]])] & _HASH_MASK)
        return np.concatenate(found)


class NgramCounter:
    """How many reviews have each n-gram, counted a chunk of reviews at a time in bounded memory: each chunk's distinct
    n-grams, with their counts, are spilled to ``parts`` files by their hashes' top bits, and ``table`` reads back one
    part at a time. Memory then follows a chunk and one part of the distinct n-grams, not the corpus. Several
    processes count into one folder, each as a ``writer`` of its own; ``table`` reads every writer's files.

    Args:
        folder: where the parts are written (created; the caller removes it).
        orders: n-grams of 1 to this many words.
        parts: files the counts are spread over.
        writer: this counter's name among those writing into ``folder``.
    """

    RECORD = np.dtype([("hash", "<u8"), ("count", "<u4")])

    def __init__(self, folder: Path, orders: int, parts: int = 64, writer: str = "0") -> None:
        self.orders, self.folder = orders, folder
        self.bits = max(1, (parts - 1).bit_length())
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"part{i}.{writer}.bin" for i in range(1 << self.bits)]
        for path in self.paths:
            path.write_bytes(b"")

    def add(self, words: Words) -> None:
        """Count the reviews of ``words`` (each n-gram once per review)."""
        found = np.sort(words.distinct(self.orders))
        if not len(found):
            return
        starts = np.flatnonzero(np.concatenate([[True], found[1:] != found[:-1]]))
        records = np.empty(len(starts), dtype=self.RECORD)
        records["hash"] = found[starts]
        records["count"] = np.diff(np.concatenate([starts, [len(found)]]))
        # sorted: each part's records are one slice
        bounds = np.searchsorted(records["hash"] >> np.uint64(64 - self.bits),
                                 np.arange(len(self.paths) + 1, dtype=np.uint64))
        for path, lo, hi in zip(self.paths, bounds[:-1], bounds[1:]):
            if hi > lo:
                with open(path, "ab") as f:
                    records[lo:hi].tofile(f)

    def table(self, min_count: int) -> np.ndarray:
        """The sorted hashes of the n-grams found in at least ``min_count`` of the reviews counted by every writer."""
        return self.read_table(self.folder, min_count, len(self.paths))

    @classmethod
    def read_table(cls, folder: Path, min_count: int, parts: int = 64) -> np.ndarray:
        """``table`` of the counts every writer spilled into ``folder`` (``parts`` files each), read by a process
        that counted none."""
        kept = [np.zeros(0, dtype=np.uint64)]
        for i in range(parts):  # in the order of their top bits: the result is sorted
            records = np.concatenate([np.zeros(0, dtype=cls.RECORD), *(np.fromfile(path, dtype=cls.RECORD)
                                      for path in sorted(folder.glob(f"part{i}.*.bin")))])
            if not len(records):
                continue
            records = records[np.argsort(records["hash"], kind="stable")]
            starts = np.flatnonzero(np.concatenate([[True], records["hash"][1:] != records["hash"][:-1]]))
            counts = np.add.reduceat(records["count"].astype(np.int64), starts)
            kept.append(records["hash"][starts[counts >= min_count]])
        return np.concatenate(kept)


def review_hashes(tokens: Sequence[Sequence[bytes]], orders: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct n-grams (1 to ``orders`` words) of each review, as sorted hashes given end to end, and how
    many each review has: the definition that the faster ``Words.distinct`` and ``NgramTable.encode`` follow."""
    h, owner = Words.of(tokens).ngrams(orders)
    order = np.lexsort((h, owner))
    h, owner = h[order], owner[order]
    first = np.ones(len(h), dtype=bool)
    first[1:] = (h[1:] != h[:-1]) | (owner[1:] != owner[:-1])
    return h[first], np.bincount(owner[first], minlength=len(tokens))


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
        occurrences = np.bincount(ids)[ids]
        each = np.where(ids > 0, contributions[ids] / (occurrences * n), 0.0)
        for k in range(n):
            shares[k: k + len(ids)] += each
    return shares


@dataclass(eq=False)
class NgramTable:
    """The n-grams a bag knows: sorted n-gram hashes (an n-gram's id is its position + 1; 0 pads).

    It travels inside checkpoints beside the vocabulary and in an ONNX export's metadata (``to_dict``/``from_dict``:
    the hashes as one base64 string, which JSON and torch's weights-only unpickler both read quickly).
    """

    hashes: np.ndarray
    orders: int = 3
    _index: tuple[np.uint64, np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.hashes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NgramTable) and self.orders == other.orders and np.array_equal(self.hashes,
                                                                                                other.hashes)

    @classmethod
    def build(cls, words: Words, min_count: int, orders: int) -> NgramTable:
        """The n-grams found in at least ``min_count`` of the reviews of ``words``."""
        found = np.sort(words.distinct(orders))  # np.unique's own sorting is many times slower here
        starts = np.flatnonzero(np.concatenate([[True], found[1:] != found[:-1]]))
        counts = np.diff(np.concatenate([starts, [len(found)]]))
        return cls(found[starts[counts >= min_count]], orders)

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """The id of each hash (0 where the n-gram is not in the table).

        The hashes sit in a table of twice as many slots, each at the slot its top bits name or, where that is
        taken, the next free one; in order, since the hashes are sorted (``_probing_table``). A lookup reads its
        slot and, for the few hashes whose slot holds a smaller one, the next: most take one cache miss, where a
        binary search takes twenty steps."""
        if self._index is None:
            self._index = _probing_table(self.hashes)
        shift, keys, ids = self._index
        at = (hashes >> shift).astype(np.int64)
        found = keys[at]
        out = np.zeros(len(hashes), dtype=np.int64)
        hit = found == hashes
        out[hit] = ids[at[hit]]
        pending = np.flatnonzero(found < hashes)  # a smaller hash holds the slot: this one may sit further on
        while len(pending):
            at[pending] += 1
            found = keys[at[pending]]
            hit = found == hashes[pending]
            out[pending[hit]] = ids[at[pending[hit]]]
            pending = pending[found < hashes[pending]]
        return out

    def encode(self, tokens: Sequence[Sequence[bytes]] | Words) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the known n-grams of each review (ascending, each once), end to end, and their counts (the
        ids of ``review_hashes``). Every n-gram is looked up first and each known one kept once after: one sort
        of plain integers, of fewer items."""
        words = tokens if isinstance(tokens, Words) else Words.of(tokens)
        ids, counts = [np.zeros(0, dtype=np.int32)], [np.zeros(0, dtype=np.int64)]
        id_bits = len(self).bit_length()
        for chunk in words.chunks():
            h, owner = chunk.ngrams(self.orders)
            found = self.lookup(h)
            known = found > 0
            # by review, then id; in 32 bits where both fit (a batch's few hundred reviews): twice as fast to sort
            keys = (owner[known] << id_bits) | found[known]
            keys = np.sort(keys.astype(np.uint32) if id_bits + (len(chunk) - 1).bit_length() <= 32 else keys)
            keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys
            ids.append((keys & ((1 << id_bits) - 1)).astype(np.int32))
            counts.append(np.bincount(keys >> id_bits, minlength=len(chunk)))
        return np.concatenate(ids), np.concatenate(counts)

    def to_dict(self) -> dict:
        return {"hashes": base64.b64encode(self.hashes.astype("<u8").tobytes()).decode("ascii"),
                "orders": self.orders, "bag_version": BAG_VERSION}

    @classmethod
    def from_dict(cls, d: Mapping) -> NgramTable:
        if d.get("bag_version") != BAG_VERSION:
            raise DataError(f"this n-gram table was saved with bag version {d.get('bag_version')}; this sentiment "
                            f"release reads version {BAG_VERSION}")
        return cls(np.frombuffer(base64.b64decode(d["hashes"]), dtype="<u8").astype(np.uint64), int(d["orders"]))


class NgramPresence:
    """How many reviews of each class (or with each label) have each n-gram of ``0..size``, and how many have it at
    all: what the log-count ratios are made of, counted a chunk of reviews at a time (``add``), and summed over the
    processes that counted parts of a corpus (``+=``).

    Args:
        size: the n-gram table's size (id 0 pads).
        num_classes: classes, or labels of a label set.
        multi_label: classes are label sets (rows of 0/1).
    """

    def __init__(self, size: int, num_classes: int, multi_label: bool = False) -> None:
        self.num_classes, self.multi_label = num_classes, multi_label
        self.present = np.zeros((size + 1, num_classes), dtype=np.int64)
        self.everywhere = np.zeros(size + 1, dtype=np.int64)

    def add(self, ids: np.ndarray, counts: np.ndarray, classes: np.ndarray) -> NgramPresence:
        """Count reviews given by their n-gram ids (``ids`` end to end, ``counts`` per review) and classes,
        ``_CHUNK`` at a time."""
        size = len(self.everywhere)
        starts = np.concatenate([[0], np.cumsum(counts)])
        for lo in range(0, len(counts), _CHUNK):
            hi = min(lo + _CHUNK, len(counts))
            chunk = ids[starts[lo]: starts[hi]].astype(np.int64)
            owner = np.repeat(np.arange(hi - lo), counts[lo:hi])
            self.everywhere += np.bincount(chunk, minlength=size)
            if self.multi_label:
                for k in np.flatnonzero(classes[lo:hi].any(0)):
                    has = classes[lo:hi, k].astype(bool)
                    self.present[:, k] += np.bincount(chunk[has[owner]], minlength=size)
            else:
                self.present += np.bincount(chunk * self.num_classes + classes[lo:hi][owner],
                                            minlength=size * self.num_classes).reshape(size, self.num_classes)
        return self

    def save(self, path: Path) -> None:
        np.savez(path, present=self.present, everywhere=self.everywhere)

    @classmethod
    def load(cls, path: Path, multi_label: bool = False) -> NgramPresence:
        """What ``save`` wrote."""
        with np.load(path) as saved:
            presence = cls(0, saved["present"].shape[1], multi_label)
            presence.present, presence.everywhere = saved["present"], saved["everywhere"]
        return presence

    def __iadd__(self, other: NgramPresence) -> NgramPresence:
        self.present += other.present
        self.everywhere += other.everywhere
        return self

    def ratios(self, alpha: float = 1.0) -> np.ndarray:
        """Naive Bayes log-count ratios (``size + 1`` rows; row 0, padding, is zero): for two classes one column, the
        second class against the first (NBSVM's r); for more, one column per class, that class against the others;
        for label sets, one column per label, the texts that have it against those that do not. ``alpha`` smooths
        every count (Laplace)."""
        num_classes = self.num_classes
        present, everywhere = self.present + alpha, self.everywhere
        ratios = np.zeros((len(everywhere), 1 if num_classes == 2 and not self.multi_label else num_classes))
        if self.multi_label:  # each label against the texts without it (smoothed alike)
            p, q = present[1:], everywhere[1:, None] - present[1:] + 2 * alpha
            ratios[1:] = np.log(p / p.sum(0)) - np.log(q / q.sum(0))
        elif num_classes == 2:
            p, q = present[1:, 1], present[1:, 0]
            ratios[1:, 0] = np.log(p / p.sum()) - np.log(q / q.sum())
        else:
            rest = present.sum(1, keepdims=True) - present - alpha * (num_classes - 2)  # the others, smoothed once
            ratios[1:] = np.log(present[1:] / present[1:].sum(0)) - np.log(rest[1:] / rest[1:].sum(0))
        return ratios.astype(np.float32)


def log_count_ratios(ids: np.ndarray, counts: np.ndarray, classes: np.ndarray, size: int, num_classes: int,
                     alpha: float = 1.0) -> np.ndarray:
    """``NgramPresence.ratios`` of the reviews given by their n-gram ids (``ids`` end to end, ``counts`` per review)
    and classes (rows of 0/1 for label sets)."""
    multi_label = classes.ndim == 2
    columns = classes.shape[1] if multi_label else num_classes
    return NgramPresence(size, columns, multi_label).add(ids, counts, classes).ratios(alpha)


def _probing_table(hashes: np.ndarray) -> tuple[np.uint64, np.ndarray, np.ndarray]:
    """Sorted hashes laid out for ``NgramTable.lookup``: ``(shift, keys, ids)``. Hash ``i`` goes to slot ``h >>
    shift`` (its home, among twice as many slots as hashes) or, if an earlier hash took it, to the slot after that
    hash's: ``max(home_i, slot_{i-1} + 1)``, for all at once ``i + max over j <= i of (home_j - j)``. The slots stay
    in hash order, so a probe that meets a larger hash (or an empty slot, the largest) knows its own is absent."""
    bits = max(1, (len(hashes) - 1).bit_length()) + 1
    shift = np.uint64(64 - bits)
    home = (hashes >> shift).astype(np.int64)
    rank = np.arange(len(hashes))
    slots = np.maximum.accumulate(home - rank) + rank if len(hashes) else rank
    size = max(1 << bits, int(slots[-1]) + 1 if len(slots) else 0) + 1  # an empty slot ends every probe
    keys = np.full(size, np.uint64(2**64 - 1))  # never a hash: their low bits are zero
    keys[slots] = hashes
    ids = np.zeros(size, dtype=np.int32)  # an n-gram's id; a table holds fewer than 2**31
    ids[slots] = rank + 1
    return shift, keys, ids


def _chunks(items: Iterable) -> Iterable[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
