"""The data module's settings, in the groups that travel together: frozen dataclasses, plain Python.

``Encoding`` is everything that changes how a text becomes model input: one object, with one digest that keys the
encoded-data cache, saved whole in every checkpoint (inside its text encoder) and compared whole when a checkpoint
validates or tests. The other groups say where unlabelled reviews help (``Unlabelled``), how batches are served
(``Loading``) and where IMDb comes from (``Imdb``). LightningCLI reads each group as ``--data.<group>.<setting>``,
with the help below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentiment.data.sources import IMDB_SHA256, IMDB_TARGETS, IMDB_URL, Target
from sentiment.data.text import TOKENIZER_VERSION, Truncation, kept_ends



@dataclass(frozen=True)
class Encoding:
    """How a text becomes model input: tokens, their truncation, the vocabulary, the bag of n-grams, the label set,
    and which training reviews the vocabulary and the bag are counted on (the seeded validation split).

    Args:
        max_length: tokens the recurrent network reads per review.
        truncation: which tokens a longer review keeps: ``head``, ``tail`` or ``head_tail`` (first half and last
            half: reviews state their verdict at the start and the end).
        min_freq: a token needs this many occurrences in the training split to get an id.
        max_size: at most this many ids (``<pad>`` and ``<unk>`` included); None for no limit.
        bag_ngrams: a bag of n-grams of up to this many words over each whole review, beside the recurrent network's
            ``max_length`` tokens (``sentiment.data.bag``); 0: no bag.
        bag_min_count: an n-gram joins the bag's table if at least this many training reviews have it.
        labels: the label set and its order (e.g. ``[negative, neutral, positive]``); default: the values found in
            the training split, numbers in numeric order, negative < neutral < positive, other words alphabetically.
        multi_label: each text has a set of labels, any number of them (emotions, aspects, tags): a label cell
            holds them separated by ``label_separator``, a JSONL label may be a list, a fastText line may have
            several ``__label__X``, and an empty cell means none. The model gives each label its own probability
            (fastText's ``-loss ova``) and answers every label above its threshold, chosen on validation for F1.
        label_separator: what separates the labels of a cell with ``multi_label``.
        target: with IMDb, ``label`` (positive/negative) or ``rating`` (the star rating in each file name, 1-4 and
            7-10: an 8-class task).
        val_fraction: share of the training data held out for validation when there is no ``val_file``.
        seed: seed of the validation split (stratified: every class keeps its share; with ``multi_label``, random).
        val_by_movie: with IMDb, the validation split takes whole movies (every review of a movie on one side;
            ``urls_*.txt`` in the archive names each review's movie), as the official test split's movies are all
            new: a random split shares movies with training and overstates accuracy. Where the source does not name
            the movies, the split is random.
    """

    max_length: int = 128
    truncation: Truncation = "head_tail"
    min_freq: int = 2
    max_size: int | None = 30000
    bag_ngrams: int = 3  # words, pairs and triples of the whole review: +3 points on IMDb (BENCHMARKS.md)
    bag_min_count: int = 2
    labels: tuple[str, ...] | None = None
    multi_label: bool = False
    label_separator: str = ";"
    target: Target = "label"
    val_fraction: float = 0.1
    seed: int = 42
    val_by_movie: bool = True

    def __post_init__(self) -> None:
        kept_ends(self.max_length, self.truncation)  # a bad truncation mode is refused here, not after tokenizing
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.bag_ngrams <= 8:
            raise ValueError(f"bag_ngrams must be 0 (no bag) to 8 words, got {self.bag_ngrams}")
        if self.bag_min_count < 1:
            raise ValueError(f"bag_min_count must be at least 1, got {self.bag_min_count}")
        if not self.label_separator.strip():
            raise ValueError(f"label_separator must be a visible character or string, got {self.label_separator!r}")
        if self.target not in IMDB_TARGETS:
            raise ValueError(f"target must be one of {', '.join(IMDB_TARGETS)}, got {self.target!r}")
        if self.labels is not None:  # a list from YAML or Python: a tuple of names, so that equal sets compare equal
            object.__setattr__(self, "labels", tuple(str(label).strip() for label in self.labels))

    @property
    def separator(self) -> str | None:
        """What splits a label cell into a text's labels with ``multi_label``; None: a text has one label."""
        return self.label_separator if self.multi_label else None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for checkpoints and hyperparameters, which load as data only)."""
        out = dataclasses.asdict(self)
        out["labels"] = list(self.labels) if self.labels is not None else None
        return out

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> Encoding:
        """The settings ``to_dict`` wrote. A setting a checkpoint predates has the meaning it had before it existed
        (``BEFORE_SETTING``): those runs were split at random, without a bag."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**BEFORE_SETTING, **{k: v for k, v in settings.items() if k in known}})

    def digest(self) -> str:
        """A short name for these settings and the tokenizer's version, the same whenever they are: what cached
        files are keyed by."""
        return settings_digest({**self.to_dict(), "tokenizer_version": TOKENIZER_VERSION})

    def differences(self, other: Encoding, names: Sequence[str] | None = None) -> list[str]:
        """The settings (of ``names``; default: all) that differ from ``other``'s, as ``name value (other's
        value)``."""
        names = [f.name for f in dataclasses.fields(self)] if names is None else names
        return [f"{name} {getattr(self, name)} (the checkpoint's: {getattr(other, name)})"
                for name in names if getattr(self, name) != getattr(other, name)]


# How the validation split is carved, and the rest: how a text is read (a trained model's, whatever data it reads)
SPLIT_SETTINGS = ("val_fraction", "seed", "val_by_movie")
READING_SETTINGS = tuple(f.name for f in dataclasses.fields(Encoding) if f.name not in SPLIT_SETTINGS)

# What a setting meant in checkpoints written before it existed
BEFORE_SETTING = {"val_by_movie": False, "bag_ngrams": 0}


@dataclass(frozen=True)
class Unlabelled:
    """Reviews without labels, where they teach the model (IMDb's 50,000 in ``train/unsup``).

    Args:
        word_vectors: dimensions of word vectors (skip-gram, gensim) learnt by ``prepare_data()`` from the training
            split and, with IMDb, its 50,000 unlabelled reviews, to start the model's embedding from (its
            ``embed_dim`` must match); cached beside the encoded data, so only the first fit pays for them. 0: none.
        vector_epochs: passes of skip-gram over those reviews, each taking as long as the first: more learn better
            vectors (BENCHMARKS.md measures one against five).
        pseudo_labels: self-training: a trained model's checkpoint (``best.ckpt`` of an earlier fit on the same data)
            that labels IMDb's 50,000 unlabelled reviews; those it gives at least ``pseudo_confidence`` join the
            training split with its labels (never validation or test). Labelled once, cached with the encoded data.
            ``sentiment fit --self_training true`` (``sentiment.training.selftrain``) trains that model itself, with the
            fit's recipe.
        pseudo_confidence: the probability a model must give its label for an unlabelled review to join training.
        per_batch: unlabelled reviews beside each training batch, which the model's losses on unlabelled reviews
            (``--model.vat``, ``--model.entropy``) learn from: ``file``'s, or IMDb's 50,000 when the training reviews
            are IMDb's; each batch is then ``{"labelled": ..., "unlabelled": ...}``. Where there are none (your own
            training file without ``file``, a fit from a trained model), the batches are the labelled ones alone.
            0: none (the class's default; ``sentiment fit``'s is 32).
        file: your unlabelled reviews for ``per_batch`` (.csv, .tsv, .jsonl, or .txt with one review per line);
            None: IMDb's.
    """

    word_vectors: int = 0
    vector_epochs: int = 5
    pseudo_labels: str | None = None
    pseudo_confidence: float = 0.85  # keeps about three quarters of IMDb's unlabelled reviews
    # 0 here, so that the batches stay plain for any LightningModule; `sentiment fit` sets the recipe's (RECIPE_DATA).
    # Not batch_size: checkpoints of the flat layout name the loader's so (load_data_settings)
    per_batch: int = 0
    file: str | None = None

    def __post_init__(self) -> None:
        if self.word_vectors < 0:
            raise ValueError(f"word_vectors must be 0 (none) or a number of dimensions, got {self.word_vectors}")
        if self.vector_epochs < 1:
            raise ValueError(f"vector_epochs must be 1 or more, got {self.vector_epochs}")
        if not 0.0 <= self.pseudo_confidence <= 1.0:
            raise ValueError(f"pseudo_confidence must be a probability in [0, 1], got {self.pseudo_confidence}")
        if self.per_batch < 0:
            raise ValueError(f"per_batch must be 0 (none) or a number of unlabelled reviews, got {self.per_batch}")


@dataclass(frozen=True)
class Loading:
    """How files are read and reviews served in batches.

    Args:
        batch_size: reviews per training, validation and test batch.
        min_epoch_size: an epoch trains on at least this many reviews: a smaller training split is read several
            whole times per epoch, so that a small data set gets about the training steps IMDb's 22,500 reviews get
            (a set of 9,000 short texts gained 1.5-2 points of accuracy; BENCHMARKS.md).
        predict_batch_size: reviews per prediction batch.
        num_workers: DataLoader worker processes (0 is fastest: a batch is a few reads of the cache's files).
        num_proc: processes used to tokenize (None: one per available core).
        charset: the character set of your files (``utf-8``; ``latin-1``, ``cp1252``, ``utf-16``, ...); bytes that
            are not text in it are replaced, with one warning per file.
    """

    batch_size: int = 64
    min_epoch_size: int = 20_000
    predict_batch_size: int = 4096  # read in batches of 256 on the workers, which idle only between these
    num_workers: int = 0
    num_proc: int | None = None
    charset: str = "utf-8"


@dataclass(frozen=True)
class Imdb:
    """Where IMDb comes from when ``data_dir`` holds neither ``aclImdb/`` nor the official archive.

    Args:
        download: download it (else a one-line error says what to put in ``data_dir``).
        url: where it is downloaded from.
        sha256: expected SHA-256 of the download (None to skip the check).
    """

    download: bool = True
    url: str = IMDB_URL
    sha256: str | None = IMDB_SHA256


# The data module's settings objects, by the name of its argument (``--data.<name>.<setting>``)
GROUPS = {"encoding": Encoding, "unlabelled": Unlabelled, "loader": Loading, "imdb": Imdb}


def plain(settings: Any) -> dict[str, Any]:
    """A settings object as plain data (lists, not tuples): what checkpoints and hparams.yaml hold."""
    return settings.to_dict() if hasattr(settings, "to_dict") else dataclasses.asdict(settings)


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short name for a set of settings, the same whenever they are: what cached files are keyed by."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def as_settings(cls: type, value: Any) -> Any:
    """``value`` as a ``cls`` settings object: itself, a mapping of its fields (hyperparameters read back from a
    checkpoint or a YAML file), or None for the defaults."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):  # the settings that differ from the defaults
        return cls(**value)
    # jsonargparse may hand a Namespace
    return as_settings(cls, dict(vars(value)) if hasattr(value, "__dict__") else value)
