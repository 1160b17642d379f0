"""The corpus: sources -> labels -> split -> vocabulary and bag -> cache, each a step you can call and test alone.

    corpus = Corpus("data")                       # IMDb; or Corpus("data", train_file="train.csv", ...)
    reviews, classes, reader = corpus.read_splits()   # the raw reviews of every split, their classes, the label set
    corpus.prepare()                                  # encoded once into data/.sentiment_cache/<key>/
    corpus.vocab, corpus.ngrams, corpus.load("train")

Plain numpy and torch: no Lightning, and nothing of inference (a model that labels unlabelled reviews is handed in
as a ``Labeller``). ``SentimentDataModule`` is the Lightning adapter over it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sentiment.data.bag import BAG_VERSION, NgramTable, Words
from sentiment.data.batches import EncodedReviews, StoredArray
from sentiment.errors import DataError
from sentiment.io import umask
from sentiment.data.labels import LabelReader, looks_multiple
from sentiment.data.pseudo_labels import Labeller, confidently_labelled
from sentiment.data.settings import Encoding, Imdb, Unlabelled, settings_digest
from sentiment.data.sources import (
    IMDB_ARCHIVE,
    Reviews,
    download,
    find_imdb,
    read_imdb,
    read_imdb_unlabelled,
    read_labelled,
    read_texts,
    source_signature,
)
from sentiment.data.text import TextEncoder, Vocab, encode_corpus, tokenize_bytes
from sentiment.data.vectors import cache_vectors, cached_vectors
from sentiment.data.writer import Split, class_counts, label_array, write_cache

CACHE_VERSION = 4  # 4: keyed by the digest of the whole Encoding
CACHE_FOLDER = ".sentiment_cache"
SPLITS = ("train", "val", "test")
Splits = tuple[dict[str, Reviews], dict[str, np.ndarray], LabelReader]  # reviews, their classes, the label set


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Labelled reviews from IMDb (in ``data_dir``, downloaded when absent) or your files, and their encoded cache.

    The arguments are ``SentimentDataModule``'s (see there); ``labeller`` is the model that labels IMDb's unlabelled
    reviews when ``unlabelled.pseudo_labels`` names it (``sentiment.training.selftrain`` hands it a ``Predictor``).
    """

    data_dir: Path
    train_file: str | None = None
    val_file: str | None = None
    test_file: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    id_column: str = "id"
    encoding: Encoding = Encoding()
    unlabelled: Unlabelled = Unlabelled()
    imdb: Imdb = Imdb()
    num_proc: int | None = None
    charset: str = "utf-8"
    labeller: Labeller | None = dataclasses.field(default=None, compare=False, repr=False)
    _found: dict = dataclasses.field(default_factory=dict, init=False, compare=False, repr=False)

    def replace(self, **changes: Any) -> Corpus:
        return dataclasses.replace(self, **changes)

    def labelled(self) -> Corpus:
        """The labelled reviews alone, whose vocabulary, bag and word vectors a pseudo-labelled corpus shares."""
        return self.replace(unlabelled=dataclasses.replace(self.unlabelled, pseudo_labels=None), labeller=None)

    # --- sources ------------------------------------------------------------------------------------

    def sources(self, fetch: bool = True) -> dict[str, Path | None]:
        """The files read: ``train``, ``val``, ``test`` (None where absent), ``imdb`` without a training file
        (downloaded if ``fetch`` and absent), and ``teacher``, the checkpoint of the model that labels unlabelled
        reviews."""
        files = {"train": self.train_file, "val": self.val_file, "test": self.test_file}
        sources = {k: Path(v) if v else None for k, v in files.items()}
        if sources["train"] is None:
            sources["imdb"] = self.imdb_source(fetch)
        if self.unlabelled.pseudo_labels:  # the labelling model keys the cache like the data it labels
            sources["teacher"] = Path(self.unlabelled.pseudo_labels)
        if self.unlabelled.per_batch and (self.unlabelled.file or sources["train"] is None):
            sources["unlabelled"] = Path(self.unlabelled.file) if self.unlabelled.file else sources["imdb"]
        return sources

    def reads_imdb(self, splits: Sequence[str]) -> bool:
        """Whether reading ``splits`` reads IMDb: the training split and one carved from it without a training file,
        the test split without a test file."""
        files = {"train": self.train_file, "val": self.val_file or self.train_file, "test": self.test_file}
        return any(not files[split] for split in splits)

    def imdb_source(self, fetch: bool = True) -> Path | None:
        source = find_imdb(self.data_dir)
        if source is None and fetch:
            if not self.imdb.download:
                raise DataError(f"{self.data_dir}: holds neither {IMDB_ARCHIVE} nor aclImdb/ (and download is off)")
            source = download(self.imdb.url, self.data_dir / IMDB_ARCHIVE, self.imdb.sha256)
        return source

    # --- labels and the split -----------------------------------------------------------------------

    def read_splits(self, sources: dict[str, Path | None] | None = None, pseudo_labelled: bool = True,
                    spill: Path | None = None) -> Splits:
        """The raw reviews of every split (the seeded validation split made), their classes, and the label set:
        what ``prepare()`` encodes (and what a reference model, like ``scripts/reference.py``, reads). With
        ``pseudo_labels`` set and ``pseudo_labelled``, the training split ends with the unlabelled reviews the
        labeller is sure of. With ``spill``, a folder, the texts of your files are kept there, not in memory
        (``TextStore``)."""
        enc = self.encoding
        sources = self.sources() if sources is None else sources
        reviews: dict[str, Reviews] = {}
        if "imdb" in sources:
            reviews.update(read_imdb(sources["imdb"], ("train", "test"), enc.target))
        elif enc.target != "label":
            raise DataError(f"--data.encoding.target {enc.target} reads IMDb's file names; your own files name their "
                            "classes in --data.label_column")
        for split in SPLITS:
            if sources[split] is not None:
                reviews[split] = read_labelled(sources[split], self.text_column, self.label_column, self.id_column,
                                               self.charset, spill / f"{split}.texts" if spill else None)
        names = {split: str(sources[split] or sources.get("imdb")) for split in reviews}
        train = reviews["train"]
        if enc.separator is None and not enc.labels:
            looks_multiple(train.labels, names["train"], train.where, enc.label_separator)
        reader = LabelReader.from_training(train.labels, enc.labels, names["train"], enc.separator)
        classes = {split: reader.classes(r.labels, names[split], r.where, enc.separator)
                   for split, r in reviews.items()}
        check_classes(classes["train"], reader, names["train"])
        if "val" not in reviews and enc.val_fraction > 0:
            movies = reviews["train"].groups if enc.val_by_movie else None
            val_idx, train_idx = stratified_split(classes["train"], enc.val_fraction, enc.seed, movies)
            if not 0 < len(val_idx) < len(classes["train"]):
                raise DataError(f"{names['train']}: {len(classes['train'])} reviews are too few for a val_fraction "
                                f"of {enc.val_fraction}; set --data.val_file")
            reviews["val"], classes["val"] = reviews["train"].subset(val_idx), classes["train"][val_idx]
            reviews["train"], classes["train"] = reviews["train"].subset(train_idx), classes["train"][train_idx]
        if self.unlabelled.pseudo_labels and pseudo_labelled:
            self._add_pseudo_labelled(reviews, classes, reader, sources)
        return reviews, classes, reader

    def _add_pseudo_labelled(self, reviews: dict[str, Reviews], classes: dict[str, np.ndarray], reader: LabelReader,
                             sources: dict[str, Path | None]) -> None:
        """Append IMDb's unlabelled reviews that the labeller is sure of to the training split, with its labels."""
        if "imdb" not in sources:
            raise DataError("--data.unlabelled.pseudo_labels labels IMDb's unlabelled reviews; with your own "
                            "--data.train_file, label unlabelled reviews with `sentiment predict` and add them to it")
        path = Path(self.unlabelled.pseudo_labels)
        if not path.is_file():
            raise DataError(f"{path}: no such checkpoint (--data.unlabelled.pseudo_labels)")
        if self.labeller is None:
            raise DataError(f"{path}: pseudo labels need the model that gives them: pass it as labeller= "
                            "(a Predictor; `sentiment fit` and self_train do)")
        sure, sure_classes = confidently_labelled(self.labeller, str(path), sources["imdb"], reader,
                                                  self.unlabelled.pseudo_confidence)
        reviews["train"] = reviews["train"].joined(sure)
        classes["train"] = np.concatenate([classes["train"], sure_classes])

    def unlabelled_texts(self, spill: Path | None = None) -> Sequence[Sequence[str]]:
        """What word vectors learn from: the training split's reviews and IMDb's unlabelled ones (never
        validation's or test's). With ``spill``, a folder, your files' texts are kept there, not in memory."""
        sources = self.sources()
        reviews, _, _ = self.labelled().read_splits(sources, spill=spill)
        return [reviews["train"].texts, read_imdb_unlabelled(sources["imdb"]) if "imdb" in sources else []]

    # --- the cache ----------------------------------------------------------------------------------

    def cache_key(self, sources: dict[str, Path | None]) -> str:
        """The sources (by size and modification time), how they are read, and the whole ``Encoding``."""
        key: dict[str, Any] = {
            "cache": CACHE_VERSION, "encoding": self.encoding.digest(),
            "sources": {k: source_signature(v) for k, v in sources.items() if v is not None and v.exists()},
            "columns": [self.text_column, self.label_column, self.charset],  # the labels are cached too
        }
        if self.encoding.bag_ngrams:
            key["bag"] = BAG_VERSION
        if self.unlabelled.pseudo_labels:  # the labelling model is in "sources": the same however its path is written
            key["pseudo_confidence"] = self.unlabelled.pseudo_confidence
        name = "imdb" if sources["train"] is None else sources["train"].stem
        return f"{name}-{settings_digest(key)}"

    @property
    def cache_dir(self) -> Path:
        """The folder of the encoded data that ``prepare()`` writes, keyed by the sources and settings (nothing is
        read or downloaded to name it; once found, it is remembered)."""
        if "cache" in self._found:
            return self._found["cache"]
        cache = self.data_dir / CACHE_FOLDER / self.cache_key(self.sources(fetch=False))
        if (cache / "meta.json").is_file():
            self._found["cache"] = cache
        return cache

    def prepare(self, vectors: bool = True) -> Path:
        """Write the encoded cache if absent (downloading IMDb if need be), and with ``vectors`` the word vectors
        ``unlabelled.word_vectors`` asks for; the cache folder."""
        sources = self.sources(fetch=True)
        root = self.data_dir / CACHE_FOLDER
        cache = root / self.cache_key(sources)
        if not (cache / "meta.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=root))
            try:
                (tmp / ".texts").mkdir()
                reviews, classes, reader = self.read_splits(sources, pseudo_labelled=False, spill=tmp / ".texts")
                labelled = len(reviews["train"])  # the vocabulary counts these: the reviews a model labelled do not
                if self.unlabelled.pseudo_labels:
                    self._add_pseudo_labelled(reviews, classes, reader, sources)
                splits = [Split(s, reviews[s].texts, classes[s]) for s in SPLITS if s in reviews]
                if "unlabelled" in sources:  # after the splits: never counted in the vocabulary or the bag
                    texts = (read_texts(sources["unlabelled"], self.text_column, self.charset, tmp / ".texts" / "u")
                             if self.unlabelled.file else read_imdb_unlabelled(sources["unlabelled"]))
                    none = np.zeros((len(texts), *classes["train"].shape[1:]), dtype=classes["train"].dtype)
                    splits.append(Split("unlabelled", texts, none))
                write_cache(splits, reader.labels, self.encoding, tmp, labelled, self.num_proc)
                shutil.rmtree(tmp / ".texts")
                tmp.chmod(0o777 & ~umask())  # as a plain mkdir would make it, not mkdtemp's private 0700
                try:
                    os.rename(tmp, cache)  # atomic: readers see no cache or a complete one
                except OSError:
                    if not (cache / "meta.json").is_file():  # not another process that finished first
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self._found["cache"] = cache
        dim = self.unlabelled.word_vectors
        if vectors and dim:
            if self.unlabelled.pseudo_labels:  # the vocabulary is the labelled data's, and so are its vectors
                self.labelled().prepare()
            else:
                with tempfile.TemporaryDirectory(prefix=".texts.", dir=root) as spill:
                    cache_vectors(cache, dim, self.unlabelled.vector_epochs,
                                  lambda: self.unlabelled_texts(Path(spill)), self.encoding.seed, self.num_proc)
        return cache

    # --- what the cache holds -----------------------------------------------------------------------

    def meta(self) -> dict:
        cache = self.cache_dir
        if not (cache / "meta.json").is_file():
            raise DataError("the vocabulary and labels are read from the training data by prepare_data(): call "
                            "dm.prepare_data() first (Trainer.fit and `sentiment fit` do)")
        return json.loads((cache / "meta.json").read_text())

    @property
    def vocab(self) -> Vocab:
        self.meta()  # the cache is there, or a clear error
        return Vocab.load(self.cache_dir / "vocab.json")

    @property
    def ngrams(self) -> NgramTable | None:
        """The n-grams the bag knows, or None without a bag."""
        if not self.encoding.bag_ngrams:
            return None
        self.meta()
        return NgramTable(np.load(self.cache_dir / "ngrams.npy"), self.encoding.bag_ngrams)

    @property
    def bag_ratios(self) -> np.ndarray | None:
        """Each n-gram's naive-Bayes log-count ratio on the training split (``bag_size + 1`` x outputs; row 0 pads),
        which scales the bag's weights; None without a bag."""
        if not self.encoding.bag_ngrams:
            return None
        self.meta()
        return np.load(self.cache_dir / "ngram_ratios.npy")

    @property
    def embedding_vectors(self) -> np.ndarray | None:
        """The word vectors ``prepare()`` learnt (``vocab_size x word_vectors``), or None without them."""
        dim = self.unlabelled.word_vectors
        return cached_vectors(self.labelled().cache_dir, dim, self.unlabelled.vector_epochs) if dim else None

    def text_encoder(self, vocab: Vocab | None = None) -> TextEncoder:
        """Tokenizer, vocabulary, truncation and n-gram table: what a model needs to read raw text as training did."""
        return TextEncoder(vocab or self.vocab, self.encoding.max_length, self.encoding.truncation, self.ngrams)

    def load(self, split: str, missing: Callable[[str], str] | None = None) -> EncodedReviews:
        """The encoded ``split`` of the cache: its token and n-gram ids read from the files a batch at a time."""
        meta, cache = self.meta(), self.cache_dir
        if split not in meta["splits"]:
            raise DataError(missing(split) if missing else f"no {split} split")

        def small(part: str) -> np.ndarray:  # a few bytes a review: read whole
            return np.load(cache / f"{split}.{part}.npy")

        bags = (StoredArray(cache / f"{split}.bag.npy"), small("bag_counts")) if self.encoding.bag_ngrams else None
        return EncodedReviews(StoredArray(cache / f"{split}.ids.npy"), small("lengths"), small("labels"), bags=bags)

    def encoded_with(self, splits: Sequence[str], encoder: TextEncoder, labels: Sequence[str]
                     ) -> dict[str, EncodedReviews]:
        """The ``splits`` encoded in memory as a trained model reads, with its ``encoder`` and ``labels`` (a label
        outside them is a one-line error): no cache, no vocabulary of their own, words the model does not know read
        as unknown. Validation and test come from their files (IMDb's official test split without a test file);
        the training split, and a validation split carved from it, from the training data, split as ``prepare()``
        splits it."""
        out, labels = {}, tuple(labels)
        # a test file, and a validation file evaluated alone, need no training data
        apart = [s for s in splits if s == "test" or (s == "val" and self.val_file and "train" not in splits)]
        for split in apart:
            path = Path(getattr(self, f"{split}_file") or "")
            if path != Path(""):
                reviews = read_labelled(path, self.text_column, self.label_column, self.id_column, self.charset)
            else:
                path = self.imdb_source()
                reviews = read_imdb(path, ("test",), self.encoding.target).get("test")
                if reviews is None:
                    raise DataError(self.missing_split("test"))
            classes = LabelReader(labels).classes(reviews.labels, str(path), reviews.where, self.encoding.separator)
            out[split] = encode_reviews(reviews, classes, encoder, self.num_proc)
        rest = [s for s in splits if s not in apart]
        if rest and self.cached_as(encoder, labels):  # the model was trained on this cache: read it, as training did
            out.update({split: self.load(split, self.missing_split) for split in rest})
        elif rest:
            fixed = self.replace(encoding=dataclasses.replace(self.encoding, labels=labels)).labelled()
            sources = fixed.sources()
            sources["test"] = None  # read apart, if at all
            reviews, classes, _ = fixed.read_splits(sources, pseudo_labelled=False)
            for split in rest:
                if split not in reviews:
                    raise DataError(self.missing_split(split))
                out[split] = encode_reviews(reviews[split], classes[split], encoder, self.num_proc)
        return out

    def cached_as(self, encoder: TextEncoder, labels: Sequence[str]) -> bool:
        """Whether the cache holds these reviews encoded as ``encoder`` reads them, with these ``labels``: the cache
        of the data a model was trained on."""
        if not (self.cache_dir / "meta.json").is_file() or tuple(self.meta()["labels"]) != tuple(labels):
            return False
        return self.ngrams == encoder.ngrams and self.vocab == encoder.vocab  # no bag on either side is the same bag

    def missing_split(self, split: str) -> str:
        """Why a split is missing, in one line."""
        if split == "test":
            if self.train_file:
                return "no test data: set --data.test_file"
            return f"{self.imdb_source(False)}: the IMDb source has no test split (aclImdb/test/pos, aclImdb/test/neg)"
        return "no validation data: set --data.val_file or a val_fraction above 0"


def encode_reviews(reviews: Reviews, classes: np.ndarray, encoder: TextEncoder, num_proc: int | None = None
                   ) -> EncodedReviews:
    """Reviews encoded in memory with a trained model's ``encoder`` (its vocabulary, truncation and n-gram table), as
    the cache holds them: what evaluating a model on new labelled data needs, and no training data."""
    _, ids, lengths = encode_corpus(reviews.texts, vocab=encoder.vocab, max_length=encoder.max_length,
                                    truncation=encoder.truncation, num_proc=num_proc)
    bags = encoder.ngrams.encode(Words.of(tokenize_bytes(t) for t in reviews.texts)) if encoder.ngrams else None
    return EncodedReviews(ids, lengths, label_array(classes), bags=bags)


def check_classes(classes: np.ndarray, reader: LabelReader, source: str) -> None:
    """Every class of a training split needs two reviews, and there must be two classes."""
    counts = class_counts(classes, len(reader.labels))
    if (counts > 0).sum() < 2:
        found = reader.labels[int(np.argmax(counts))]
        raise DataError(f"{source}: every training review has label {found}; a classifier needs at least two classes")
    if counts.min() < 2:
        rare = ", ".join(f"{reader.labels[i]} ({counts[i]})" for i in np.flatnonzero(counts < 2))
        raise DataError(f"{source}: too few training reviews of {rare}; every class needs at least two")


def stratified_split(classes: np.ndarray, fraction: float, seed: int, groups: list[str] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A seeded held-out share of every class (rounded, at least one of each), and the rest in their order; of label
    sets (rows of 0/1), a seeded share of the texts.

    With ``groups``, whole groups are held out (every review of a movie on one side): groups are taken in a
    seeded order while they fit in what every class still needs, so each class gets its share, or as close to
    it as the group sizes allow. Held-out rows come shuffled, so validation batches mix the classes."""
    rng = np.random.default_rng(seed)
    if classes.ndim == 2:  # label sets: a seeded random share (a set's many labels cannot each keep their share)
        n = len(classes)
        order = rng.permutation(n)
        held = min(n - 1, max(1, round(n * fraction)))
        return order[:held], np.sort(order[held:])
    counts = np.bincount(classes)
    wanted = np.minimum(counts - 1, np.maximum(1, np.round(counts * fraction).astype(np.int64)))
    wanted[counts == 0] = 0
    if groups is None:
        held = [rng.permutation(np.flatnonzero(classes == c))[:n] for c, n in enumerate(wanted)]
        val_idx = rng.permutation(np.concatenate(held))
    else:
        names, group = np.unique(np.asarray(groups), return_inverse=True)
        per_group = np.zeros((len(names), len(counts)), dtype=np.int64)
        np.add.at(per_group, (group, classes), 1)
        taken, chosen = np.zeros_like(wanted), []
        for g in rng.permutation(len(names)):
            if np.all(taken + per_group[g] <= wanted):
                taken += per_group[g]
                chosen.append(g)
                if np.array_equal(taken, wanted):
                    break
        val_idx = rng.permutation(np.flatnonzero(np.isin(group, chosen)))
    train_mask = np.ones(len(classes), dtype=bool)
    train_mask[val_idx] = False
    return val_idx, np.flatnonzero(train_mask)
