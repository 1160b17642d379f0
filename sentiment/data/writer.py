"""Writing a corpus's encoded cache in bounded memory.

    the reviews of every split, end to end (texts in a list, or in a ``TextStore`` file)
      -> pass 1, on each core a part of them, ``CHUNK`` reviews at a time: tokens; the kept tokens counted for the
         vocabulary and spilled as ids of the process's own; every token's word hash spilled; the bag's n-grams of
         the counted reviews counted into spilled parts (``NgramCounter``)
      -> the vocabulary and the n-gram table
      -> pass 2, each part again: its tokens as vocabulary ids, padded; its words as the table's n-gram ids; the
         counted reviews' n-grams by class (``NgramPresence``) for the log-count ratios
      -> each split's arrays, copied from the parts' files into the cache's ``.npy`` files

Memory follows a chunk, the vocabulary and the n-gram table, and a few integers a review, not the texts. The cache is
the same, byte for byte, whatever the chunk or the number of processes. Plain numpy: no torch, no Lightning.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from sentiment.data.bag import NgramCounter, NgramPresence, NgramTable, Words
from sentiment.data.settings import Encoding
from sentiment.data.text import UNK_ID, Vocab, gc_paused, pad_rows, tokenize_bytes, truncate, worker_parts

CHUNK = 16_384  # reviews counted and encoded at a time: bounds the memory of their n-grams
STEP = 2_048  # reviews tokenized at a time: bounds the memory of their tokens as Python bytes


@dataclass
class Split:
    """One split to write: its name, texts and classes (class indices, or rows of 0/1 for label sets)."""

    name: str
    texts: Sequence[str]
    classes: np.ndarray


@dataclass
class _Job:
    """What every part's process reads; the processes fork after it is set, and inherit it."""

    texts: list[Sequence[str]]  # the splits' texts, end to end
    firsts: np.ndarray  # where each split starts, and the end
    parts: list[tuple[int, int]]
    counted: int  # the first reviews, which the vocabulary and the table are counted on
    counted_classes: np.ndarray
    num_classes: int
    encoding: Encoding
    work: Path

    def texts_between(self, lo: int, hi: int) -> list[str]:
        out: list[str] = []
        for texts, first, end in zip(self.texts, self.firsts[:-1], self.firsts[1:]):
            if lo < end and hi > first:
                out += texts[max(lo, first) - first: min(hi, end) - first]
        return out


_job: _Job | None = None
_kept: dict[int, tuple] = {}  # a part's pass-1 results that its pass 2 reads, in the process that ran both


def write_cache(splits: Sequence[Split], labels: Sequence[str], encoding: Encoding, folder: Path, counted: int,
                num_proc: int | None = None) -> None:
    """Encode ``splits`` (the training split first) into ``folder``, with a vocabulary (and a bag's table) of the first
    ``counted`` training reviews, on ``num_proc`` processes (None: one per core)."""
    global _job
    firsts = np.cumsum([0] + [len(s.texts) for s in splits])
    train = splits[0].classes
    work = folder / ".work"
    work.mkdir()
    _job = _Job([s.texts for s in splits], firsts, worker_parts(int(firsts[-1]), num_proc), counted, train[:counted],
                len(labels), encoding, work)
    pools: list[ProcessPoolExecutor] = []
    try:
        # a process per part after the first, which this one does itself; they fork at their first task
        pools = [ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) for _ in _job.parts[1:]]

        def each_part(fn, *args) -> list:
            futures = [pool.submit(fn, k, *args) for k, pool in enumerate(pools, 1)]
            return [fn(0, *args)] + [f.result() for f in futures]

        firsts_pass = each_part(_first_pass)
        counts = Counter()
        for part_counts, _ in firsts_pass:
            counts.update(part_counts)
        vocab = Vocab.build({t.decode(): c for t, c in counts.items()}, encoding.min_freq, encoding.max_size)
        vocab.save(folder / "vocab.json")
        table = None
        if encoding.bag_ngrams:
            table = NgramCounter.read_table(work / "counts", encoding.bag_min_count)
            shutil.rmtree(work / "counts")
        bag_counts = each_part(_second_pass, vocab.bytes_stoi, table)
    finally:
        for pool in pools:
            pool.shutdown(cancel_futures=True)
        parts, _job = _job.parts, None
        _kept.clear()
    lengths = np.concatenate([lengths for _, lengths in firsts_pass])
    ids_files = [work / f"{k}.ids" for k in range(len(parts))]
    part_firsts = [lo for lo, _ in parts] + [int(firsts[-1])]
    if table is not None:
        bag_counts = np.concatenate(bag_counts)
        offsets = np.concatenate([[0], np.cumsum(bag_counts)])
        presence = NgramPresence(len(table), len(labels), train.ndim == 2)
        for k in range(len(parts)):
            presence += NgramPresence.load(work / f"{k}.presence.npz", train.ndim == 2)
        np.save(folder / "ngrams.npy", table)
        np.save(folder / "ngram_ratios.npy", presence.ratios())
    for split, start, stop in zip(splits, firsts[:-1], firsts[1:]):
        name = split.name
        save_from_files(folder / f"{name}.ids.npy", np.dtype(np.int32), (stop - start, encoding.max_length), ids_files,
                        part_firsts, start, stop)
        np.save(folder / f"{name}.lengths.npy", lengths[start:stop])
        np.save(folder / f"{name}.labels.npy", label_array(split.classes))
        if table is not None:
            save_from_files(folder / f"{name}.bag.npy", np.dtype(np.int32), (offsets[stop] - offsets[start],),
                            [work / f"{k}.bag" for k in range(len(parts))], offsets[part_firsts], offsets[start],
                            offsets[stop])
            np.save(folder / f"{name}.bag_counts.npy", bag_counts[start:stop])
    shutil.rmtree(work)
    meta = {"splits": {s.name: len(s.texts) for s in splits}, "vocab_size": len(vocab), "labels": list(labels),
            "class_counts": class_counts(train, len(labels)).tolist(), "multi_label": train.ndim == 2}
    if table is not None:
        meta["bag_size"] = len(table)
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _first_pass(k: int) -> tuple[Counter, np.ndarray]:
    """Part ``k``'s tokens counted and spilled; its words spilled and n-grams counted. The counts of the kept tokens
    of its counted reviews, and each review's number of kept tokens."""
    job, local = _job, {}  # each distinct token of the part, by its first appearance: its id of the part's own
    enc, (lo, hi) = job.encoding, job.parts[k]
    counts: Counter = Counter()
    kept_lengths, word_lengths = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    counter = NgramCounter(job.work / "counts", enc.bag_ngrams, writer=str(k)) if enc.bag_ngrams else None
    with open(job.work / f"{k}.tokens", "wb") as tokens_out, open(job.work / f"{k}.words", "wb") as words_out, \
            gc_paused():
        for start in range(lo, hi, CHUNK):
            stop, words = min(start + CHUNK, hi), []
            for a in range(start, stop, STEP):
                b = min(a + STEP, stop)
                tokens = [tokenize_bytes(t) for t in job.texts_between(a, b)]
                kept = [truncate(t, enc.max_length, enc.truncation) for t in tokens]
                counts.update(chain.from_iterable(kept[: max(0, job.counted - a)]))
                for token in dict.fromkeys(chain.from_iterable(kept)).keys() - local.keys():
                    local[token] = len(local)
                n = np.fromiter(map(len, kept), dtype=np.int64, count=len(kept))
                np.fromiter(map(local.__getitem__, chain.from_iterable(kept)), dtype=np.int32,
                            count=int(n.sum())).tofile(tokens_out)
                kept_lengths.append(n)
                if counter:
                    words.append(Words.of(tokens))
            if counter:
                words = Words.concat(words)
                words.hashes.tofile(words_out)
                word_lengths.append(words.lengths)
                if start < job.counted:
                    counter.add(words.first(job.counted - start))
    kept_lengths = np.concatenate(kept_lengths)
    _kept[k] = (list(local), kept_lengths, np.concatenate(word_lengths))
    return counts, kept_lengths


def _second_pass(k: int, stoi: dict[bytes, int], table: np.ndarray | None) -> np.ndarray | None:
    """Part ``k``'s spilled tokens as padded vocabulary ids, and its words as the table's n-gram ids, into files;
    its counted reviews' n-grams by class into another. Each review's number of n-gram ids (None without a bag)."""
    job = _job
    enc, work, (lo, _) = job.encoding, job.work, job.parts[k]
    local, kept_lengths, word_lengths = _kept.pop(k)
    to_vocab = np.fromiter(map(stoi.get, local, repeat(UNK_ID)), dtype=np.int32, count=len(local))
    with open(work / f"{k}.tokens", "rb") as spill, open(work / f"{k}.ids", "wb") as out:
        for a in range(0, len(kept_lengths), CHUNK):
            n = kept_lengths[a: a + CHUNK]
            flat = np.fromfile(spill, dtype=np.int32, count=int(n.sum()))
            pad_rows(to_vocab[flat], n, enc.max_length).tofile(out)
    (work / f"{k}.tokens").unlink()
    if table is None:
        return None
    ngrams = NgramTable(table, enc.bag_ngrams)
    presence = NgramPresence(len(ngrams), job.num_classes, job.counted_classes.ndim == 2)
    counts = [np.zeros(0, dtype=np.int64)]
    with open(work / f"{k}.words", "rb") as spill, open(work / f"{k}.bag", "wb") as out:
        for a in range(0, len(word_lengths), CHUNK):
            n = word_lengths[a: a + CHUNK]
            ids, sizes = ngrams.encode(Words(np.fromfile(spill, dtype=np.uint64, count=int(n.sum())), n))
            ids.tofile(out)
            counts.append(sizes)
            m = min(len(n), job.counted - (lo + a))  # the chunk's counted reviews
            if m > 0:
                presence.add(ids[: int(sizes[:m].sum())], sizes[:m], job.counted_classes[lo + a: lo + a + m])
    (work / f"{k}.words").unlink()
    presence.save(work / f"{k}.presence.npz")
    return np.concatenate(counts)


def save_from_files(path: Path, dtype: np.dtype, shape: tuple[int, ...], files: Sequence[Path], firsts: Sequence[int],
                    lo: int, hi: int) -> None:
    """Write ``path`` as ``np.save`` writes an array of ``shape``, whose rows are rows ``lo`` to ``hi`` of the
    ``files``' rows end to end (file ``k``'s first is row ``firsts[k]``), copied a stretch at a time: never in
    memory, nor mapped into it."""
    row = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    with open(path, "wb") as out:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": tuple(int(d) for d in shape)}
        np.lib.format.write_array_header_1_0(out, header)
        for path_k, first, end in zip(files, firsts[:-1], firsts[1:]):
            a, b = max(lo, first), min(hi, end)
            if a >= b:
                continue
            with open(path_k, "rb") as src:
                src.seek(int(a - first) * row)
                left = int(b - a) * row
                while left:
                    data = src.read(min(left, 1 << 24))
                    out.write(data)
                    left -= len(data)


def class_counts(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Reviews per class: of class indices, or of label sets (rows of 0/1), the texts that have each label."""
    if classes.ndim == 2:
        return classes.sum(0, dtype=np.int64)
    return np.bincount(classes, minlength=num_classes)


def label_array(classes: np.ndarray) -> np.ndarray:
    """Labels as stored: class indices as int16, label sets as rows of 0/1 in uint8."""
    return classes.astype(np.uint8 if classes.ndim == 2 else np.int16)
