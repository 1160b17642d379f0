"""Word vectors learnt from raw reviews (gensim's skip-gram), to start a model's embedding from.

Reviews without labels teach what words mean: words used alike get alike vectors. Trained on the training split
and, with IMDb, its 50,000 unlabelled reviews (never on validation or test reviews), they give the classifier
a head start that its labelled reviews alone cannot (BENCHMARKS.md). gensim is imported only here, and only
when vectors are asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path

import numpy as np

from sentiment.errors import DataError
from sentiment.io import atomic_open
from sentiment.data.text import PAD_ID, Vocab, tokenize, worker_count

VECTORS_VERSION = 1  # bump when the training below changes: it names the cached file
WINDOW = 5  # words either side that count as context
MIN_COUNT = 2  # rarer words are dropped from the contexts too


def vectors_file(cache: Path, dim: int, epochs: int) -> Path:
    """Where the vectors of ``dim`` dimensions, learnt in ``epochs`` passes, for the vocabulary cached in ``cache``
    are kept."""
    return cache / f"vectors-v{VECTORS_VERSION}-sg-d{dim}-w{WINDOW}-e{epochs}-m{MIN_COUNT}.npy"


def cache_vectors(cache: Path, dim: int, epochs: int, texts: Callable[[], Sequence[Sequence[str]]], seed: int,
                  workers: int | None = None) -> None:
    """Learn the vectors of ``dim`` dimensions in ``epochs`` passes for the vocabulary cached in ``cache`` from
    ``texts()``, sequences of texts read one after the other (called only if the vectors are not there yet), and keep
    them beside it; a failed write leaves no file."""
    path = vectors_file(cache, dim, epochs)
    if path.is_file():
        return
    table = train_vectors(texts(), Vocab.load(cache / "vocab.json"), dim, seed=seed, epochs=epochs, workers=workers)
    with atomic_open(path, "wb") as f:
        np.save(f, table)


def cached_vectors(cache: Path, dim: int, epochs: int) -> np.ndarray:
    """The vectors ``cache_vectors`` kept for the vocabulary in ``cache``."""
    path = vectors_file(cache, dim, epochs)
    if not path.is_file():
        raise DataError("word vectors are learnt by prepare_data(): call dm.prepare_data() first "
                        "(Trainer.fit and `sentiment fit` do)")
    return np.load(path)


def train_vectors(texts: Sequence[Sequence[str]], vocab: Vocab, dim: int, seed: int, epochs: int,
                  workers: int | None = None, progress: bool = True) -> np.ndarray:
    """A ``len(vocab) x dim`` float32 table: each vocabulary word's skip-gram vector, learnt in ``epochs`` passes over
    ``texts`` (sequences of texts, read one after the other on each pass), scaled so that the table has unit variance
    (the scale of a freshly initialised embedding); words the texts never show often enough get random vectors of that
    scale, and ``<pad>`` zeros."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec
    from tqdm.auto import tqdm

    class Bar(CallbackAny2Vec):
        def __init__(self) -> None:
            self.bar = tqdm(total=epochs, desc="word vectors: skip-gram", unit=" epoch", disable=not progress)

        def on_epoch_end(self, model) -> None:
            self.bar.update(1)

        def on_train_end(self, model) -> None:
            self.bar.close()

    model = Word2Vec(_Tokenized(texts), vector_size=dim, window=WINDOW, min_count=MIN_COUNT, sg=1, epochs=epochs,
                     workers=worker_count(workers), seed=seed, callbacks=[Bar()])
    known = np.array([w in model.wv.key_to_index for w in vocab.itos])
    table = np.random.default_rng(seed).standard_normal((len(vocab), dim)).astype(np.float32)
    found = np.stack([model.wv[w] for w, k in zip(vocab.itos, known) if k]) if known.any() else None
    if found is not None:
        table[known] = found / found.std()
    table[PAD_ID] = 0.0
    return table


class _Tokenized:
    """The texts tokenized afresh on each of gensim's passes: memory stays flat (the token lists of 72,500
    reviews would take gigabytes), and tokenizing takes seconds beside a training pass's tens of seconds."""

    def __init__(self, texts: Sequence[Sequence[str]]) -> None:
        self.texts = texts

    def __iter__(self):
        return (tokenize(t) for t in chain.from_iterable(self.texts))
