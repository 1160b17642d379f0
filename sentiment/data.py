"""``SentimentDataModule``: reviews -> cached token ids -> padded batches.

It reads top to bottom as the data flows: the sources (IMDb, or your files), the cache they are encoded into once
(vocabulary, token ids, the bag's n-grams, word vectors), the splits, and the loaders. Two parts live in modules of
their own: the reviews a model labelled (``sentiment.pseudo_labels``) and word vectors (``sentiment.vectors``);
batches and their order are ``sentiment.batches``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch.utils.data import DataLoader

from sentiment.bag import BAG_VERSION, NgramTable, Words, log_count_ratios
from sentiment.batches import (
    DistributedEpochShuffle,
    EncodedReviews,
    EpochShuffle,
    ResumableLoader,
    UnlabelledReviews,
    as_batch,
)
from sentiment.errors import DataError
from sentiment.labels import LabelReader
from sentiment.pseudo_labels import confidently_labelled
from sentiment.sources import (
    IMDB_ARCHIVE,
    IMDB_SHA256,
    IMDB_URL,
    Reviews,
    download,
    find_imdb,
    read_imdb,
    read_imdb_unlabelled,
    read_labelled,
    source_signature,
)
from sentiment.text import TOKENIZER_VERSION, TextEncoder, Truncation, Vocab, encode_corpus, kept_ends, tokenize_bytes
from sentiment.vectors import cache_vectors, cached_vectors

CACHE_VERSION = 3  # 3: labels are class indices of a label set named in meta.json
CACHE_FOLDER = ".sentiment_cache"
SPLITS = ("train", "val", "test")
# The settings that decide the vocabulary and how every review is encoded: a TextEncoder's own settings, how its
# vocabulary is counted, and which reviews it is counted on. With the source files they key the cache, and
# `validate` and `test` take them from the checkpoint: a model evaluates only reviews encoded as it was trained.
ENCODING_KEYS = (*(f.name for f in dataclasses.fields(TextEncoder) if f.name not in ("vocab", "ngrams")),
                 "min_freq", "max_size", "bag_ngrams", "bag_min_count", "text_column", "val_fraction", "seed",
                 "val_by_movie", "pseudo_labels", "pseudo_confidence")
# What a data setting meant in checkpoints written before it existed: their runs were split at random, without a bag
BEFORE_SETTING = {"val_by_movie": False, "bag_ngrams": 0}
# The settings that decide the classes: which label the reviews carry, and the label set with its order
LABEL_KEYS = ("target", "labels")
Target = Literal["label", "rating"]


class SentimentDataModule(L.LightningDataModule):
    """Movie reviews as padded token-id batches: IMDb by default, or your own CSV/TSV/JSONL files.

    Batches are dicts: ``input_ids`` (B x T, right-padded with 0, T <= max_length), ``lengths`` (B) and
    ``labels`` (B, 1 = positive). Predict batches carry the raw ``text``, its row ``index`` and ``id``
    instead: the model encodes them with the vocabulary saved in its checkpoint.

    Args:
        data_dir: folder for the IMDb data (``aclImdb/`` or ``aclImdb_v1.tar.gz``, downloaded when
            absent) and for the encoded-data cache.
        train_file: your own labelled training data (.csv, .tsv or .jsonl) instead of IMDb.
        val_file: labelled validation data; default: a seeded ``val_fraction`` of the training data.
        test_file: labelled test data; default with IMDb: the official test split.
        predict_file: reviews to classify (.csv, .tsv, .jsonl, or .txt with one review per line).
        text_column: column (or JSON key) holding the review; Kaggle's ``review`` is recognised.
        label_column: column holding the label: any values, words or numbers (0/1, pos/neg,
            positive/negative and true/false read as negative/positive); Kaggle's ``sentiment`` is recognised.
        id_column: optional column copied into predictions.
        max_length: tokens kept per review.
        truncation: which tokens a longer review keeps: ``head``, ``tail`` or ``head_tail`` (first half
            and last half: reviews state their verdict at the start and the end).
        min_freq: a token needs this many occurrences in the training split to get an id.
        max_size: at most this many ids (``<pad>`` and ``<unk>`` included); None for no limit.
        val_fraction: share of the training data held out for validation when there is no ``val_file``.
        seed: seed of the validation split (stratified: every class keeps its share).
        val_by_movie: with IMDb, the validation split takes whole movies (every review of a movie on one side;
            ``urls_*.txt`` in the archive names each review's movie), as the official test split's movies are
            all new: a random split shares movies with training and overstates accuracy. Where the source does
            not name the movies, the split is random.
        labels: the label set and its order (e.g. ``[negative, neutral, positive]``); default: the values found
            in the training split, numbers in numeric order, negative < neutral < positive, other words
            alphabetically.
        target: with IMDb, ``label`` (positive/negative) or ``rating`` (the star rating in each file name,
            1-4 and 7-10: an 8-class task).
        bag_ngrams: a bag of n-grams of up to this many words over each whole review, beside the recurrent network's
            ``max_length`` tokens (``sentiment.bag``); 0: no bag.
        bag_min_count: an n-gram joins the bag's table if at least this many training reviews have it.
        word_vectors: dimensions of word vectors (skip-gram, gensim) learnt by ``prepare_data()`` from the
            training split and, with IMDb, its 50,000 unlabelled reviews, to start the model's embedding from
            (its ``embed_dim`` must match); cached beside the encoded data, so only the first fit pays for them.
            0: none.
        pseudo_labels: self-training: a trained model's checkpoint (``best.ckpt`` of an earlier fit on the same
            data) that labels IMDb's 50,000 unlabelled reviews; those it gives at least ``pseudo_confidence`` join
            the training split with its labels (never validation or test). Labelled once, cached with the
            encoded data. ``sentiment fit --self_training true`` (``sentiment.selftrain``) trains that model itself,
            with the fit's recipe.
        pseudo_confidence: the probability a model must give its label for an unlabelled review to join training.
        batch_size: reviews per training, validation and test batch.
        min_epoch_size: an epoch trains on at least this many reviews: a smaller training split is read several
            whole times per epoch, so that a small data set gets about the training steps IMDb's 22,500 reviews
            get (a set of 9,000 short texts gained 1.5-2 points of accuracy; BENCHMARKS.md).
        predict_batch_size: reviews per prediction batch.
        num_workers: DataLoader worker processes (0 is fastest: batches are slices of in-memory arrays).
        download: download IMDb when ``data_dir`` holds neither ``aclImdb/`` nor the archive.
        url: where IMDb is downloaded from.
        sha256: expected SHA-256 of the download (None to skip the check).
        num_proc: processes used to tokenize (None: one per available core).
    """

    def __init__(
        self,
        data_dir: str = "data",
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        id_column: str = "id",
        max_length: int = 128,
        truncation: Truncation = "head_tail",
        min_freq: int = 2,
        max_size: int | None = 30000,
        val_fraction: float = 0.1,
        seed: int = 42,
        val_by_movie: bool = True,
        labels: list[str] | None = None,
        target: Target = "label",
        bag_ngrams: int = 3,  # words, pairs and triples of the whole review: +3 points on IMDb (BENCHMARKS.md)
        bag_min_count: int = 2,
        word_vectors: int = 0,
        pseudo_labels: str | None = None,
        pseudo_confidence: float = 0.85,  # keeps about three quarters of IMDb's unlabelled reviews
        batch_size: int = 64,
        min_epoch_size: int = 20_000,
        predict_batch_size: int = 4096,  # read in batches of 256 on the workers, which idle only between these
        num_workers: int = 0,
        download: bool = True,
        url: str = IMDB_URL,
        sha256: str | None = IMDB_SHA256,
        num_proc: int | None = None,
    ) -> None:
        super().__init__()
        kept_ends(max_length, truncation)  # a bad truncation mode is refused here, not after tokenizing
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0 <= bag_ngrams <= 8:
            raise ValueError(f"bag_ngrams must be 0 (no bag) to 8 words, got {bag_ngrams}")
        if bag_min_count < 1:
            raise ValueError(f"bag_min_count must be at least 1, got {bag_min_count}")
        if word_vectors < 0:
            raise ValueError(f"word_vectors must be 0 (none) or a number of dimensions, got {word_vectors}")
        if not 0.0 <= pseudo_confidence <= 1.0:
            raise ValueError(f"pseudo_confidence must be a probability in [0, 1], got {pseudo_confidence}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self._vocab: Vocab | None = None
        self._splits: dict[str, EncodedReviews] = {}
        self._cache: Path | None = None
        self._train_loader: ResumableLoader | None = None
        self._resume_state: dict | None = None

    # --- facts the model needs --------------------------------------------------------------------

    @property
    def vocab(self) -> Vocab:
        """The training vocabulary, from the cache that ``prepare_data()`` writes (it reads nothing else)."""
        if self._vocab is None:
            cache = self.cache_dir
            if not (cache / "vocab.json").is_file():
                raise DataError("the vocabulary is built from the training data by prepare_data(): call "
                                "dm.prepare_data() first (Trainer.fit and `sentiment fit` do)")
            self._cache, self._vocab = cache, Vocab.load(cache / "vocab.json")
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def label_names(self) -> list[str]:
        """The classes, in order, as ``prepare_data()`` found them in the training split (or ``labels`` gave)."""
        return list(self._meta()["labels"])

    @property
    def class_counts(self) -> list[int]:
        """Training reviews per class, in the order of ``label_names``."""
        return list(self._meta()["class_counts"])

    def _meta(self) -> dict:
        cache = self.cache_dir
        if not (cache / "meta.json").is_file():
            raise DataError("the labels are read from the training data by prepare_data(): call "
                            "dm.prepare_data() first (Trainer.fit and `sentiment fit` do)")
        self._cache = cache
        return json.loads((cache / "meta.json").read_text())

    @property
    def pad_id(self) -> int:
        return Vocab.pad_id

    @property
    def bag_size(self) -> int:
        """How many n-grams the bag knows (0: no bag), as ``prepare_data()`` counted them."""
        return int(self._meta().get("bag_size", 0))

    @property
    def ngrams(self) -> NgramTable | None:
        """The n-grams the bag knows (``prepare_data()`` writes them), or None without a bag."""
        if not self.hparams.bag_ngrams:
            return None
        self._meta()  # the cache is there, or a clear error
        return NgramTable(np.load(self.cache_dir / "ngrams.npy"), self.hparams.bag_ngrams)

    @property
    def bag_ratios(self) -> np.ndarray | None:
        """Each n-gram's naive-Bayes log-count ratio on the training split (``bag_size + 1`` x outputs; row 0 pads),
        which scales the bag's weights; None without a bag."""
        if not self.hparams.bag_ngrams:
            return None
        self._meta()
        return np.load(self.cache_dir / "ngram_ratios.npy")

    @property
    def cache_dir(self) -> Path:
        """The folder of the encoded data that ``prepare_data()`` writes, keyed by the sources and settings."""
        return self._cache or self._cache_dir(write=False)

    @property
    def embedding_vectors(self) -> np.ndarray | None:
        """The word vectors ``prepare_data()`` learnt (``vocab_size x word_vectors``), or None without them."""
        if not self.hparams.word_vectors:
            return None
        home = self.with_settings(pseudo_labels=None) if self.hparams.pseudo_labels else self
        return cached_vectors(home.cache_dir, self.hparams.word_vectors)

    @property
    def text_encoder(self) -> TextEncoder:
        """Tokenizer, vocabulary and truncation together: what a model needs to read raw text."""
        return TextEncoder(self.vocab, self.hparams.max_length, self.hparams.truncation, self.ngrams)

    def with_settings(self, **changes: Any) -> SentimentDataModule:
        """A new data module of these settings with ``changes`` (``pseudo_labels=None``: the labelled data alone,
        whose vocabulary and word vectors a pseudo-labelled one shares)."""
        settings = {k: v for k, v in self.hparams.items() if not k.startswith("_")}  # not LightningCLI's own
        return type(self)(**{**settings, **changes})

    # --- Lightning hooks: write the cache, load its splits ----------------------------------------

    def prepare_data(self) -> None:
        """Download IMDb if needed and write the encoded cache. Sets no state (it runs on one process)."""
        trainer = self.trainer
        if trainer is not None and trainer.state.fn == "predict":
            return  # predicting reads only predict_file, never training data
        # the random state is left as found (a labelling model's initial weights draw from it): a fit is the same
        # whether it wrote its cache or found it
        with isolate_rng():
            cache = self._cache_dir(write=True)
            dim = self.hparams.word_vectors
            if not dim or (trainer is not None and trainer.state.fn != "fit"):
                return
            if self.hparams.pseudo_labels:  # the vocabulary is the labelled data's, and so are its vectors
                self.with_settings(pseudo_labels=None).prepare_data()
            else:
                cache_vectors(cache, dim, self._unlabelled_texts, self.hparams.seed, self.hparams.num_proc)

    def setup(self, stage: str) -> None:
        if stage == "predict":
            if self.hparams.predict_file is None:
                raise DataError("predicting needs an input file: set --data.predict_file")
            return
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}[stage]
        cache = self.cache_dir
        if not (cache / "meta.json").is_file():
            raise DataError("no encoded data: call prepare_data() before setup() (the Trainer does)")
        self._cache = cache
        meta = json.loads((cache / "meta.json").read_text())
        for split in wanted:
            if split not in meta["splits"]:
                raise DataError(self._missing_split_message(split))
            if split not in self._splits:
                def load(*parts: str) -> tuple[np.ndarray, ...]:
                    return tuple(np.load(cache / f"{split}.{part}.npy", mmap_mode="r") for part in parts)

                bags = load("bag", "bag_counts") if self.hparams.bag_ngrams else None
                self._splits[split] = EncodedReviews(*load("ids", "lengths", "labels"), bags=bags)

    # --- sources ----------------------------------------------------------------------------------

    def _sources(self, fetch: bool = True) -> dict[str, Path | None]:
        hp = self.hparams
        files = {"train": hp.train_file, "val": hp.val_file, "test": hp.test_file}
        sources = {k: Path(v) if v else None for k, v in files.items()}
        if sources["train"] is None:
            sources["imdb"] = self._imdb_source(fetch)
        if hp.pseudo_labels:  # the labelling model keys the cache like the data it labels
            sources["teacher"] = Path(hp.pseudo_labels)
        return sources

    def _imdb_source(self, fetch: bool = True) -> Path | None:
        source = find_imdb(self.data_dir)
        if source is None and fetch:
            if not self.hparams.download:
                raise DataError(f"{self.data_dir}: holds neither {IMDB_ARCHIVE} nor aclImdb/ (and download is off)")
            source = download(self.hparams.url, self.data_dir / IMDB_ARCHIVE, self.hparams.sha256)
        return source

    # --- the cache --------------------------------------------------------------------------------

    def _cache_key(self, sources: dict[str, Path | None]) -> str:
        hp = self.hparams
        key = {
            "cache": CACHE_VERSION, "tokenizer": TOKENIZER_VERSION,
            "sources": {k: source_signature(v) for k, v in sources.items() if v is not None and v.exists()},
            **{k: hp[k] for k in (*ENCODING_KEYS, *LABEL_KEYS, "label_column")},  # the labels are cached too
        }
        if hp.bag_ngrams:
            key["bag"] = BAG_VERSION
        del key["pseudo_labels"]  # the labelling model is in "sources": the same however its path is written
        if not hp.pseudo_labels:  # no labelling model: the same data, whatever confidence it would ask for
            del key["pseudo_confidence"]
        name = "imdb" if sources["train"] is None else sources["train"].stem
        return f"{name}-{settings_digest(key)}"

    def _cache_dir(self, write: bool) -> Path:
        """The cache folder for the current sources and settings; with ``write``, written first if absent
        (downloading IMDb if need be)."""
        sources = self._sources(fetch=write)
        root = self.data_dir / CACHE_FOLDER
        cache = root / self._cache_key(sources)
        if (cache / "meta.json").is_file() or not write:
            return cache
        reviews, classes, reader = self.read_splits(sources, pseudo_labelled=False)
        labelled = len(reviews["train"])  # the vocabulary counts these: the reviews a model labelled do not
        if self.hparams.pseudo_labels:
            self._add_pseudo_labelled(reviews, classes, reader, sources)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=root))
        try:
            self._encode_into((reviews, classes, reader), tmp, labelled)
            try:
                os.rename(tmp, cache)  # atomic: readers see no cache or a complete one
            except OSError:
                if not (cache / "meta.json").is_file():  # not another process that finished first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cache

    def _encode_into(self, read: tuple[dict[str, Reviews], dict[str, np.ndarray], LabelReader], folder: Path,
                     counted: int) -> None:
        """Encode the splits into ``folder``, with a vocabulary of the first ``counted`` training reviews."""
        hp = self.hparams
        reviews, classes, reader = read
        order = [s for s in SPLITS if s in reviews]
        texts = [t for s in order for t in reviews[s].texts]
        count_mask = np.concatenate([np.arange(len(reviews[s])) < (counted if s == "train" else 0) for s in order])
        vocab, ids, lengths = encode_corpus(texts, count_mask=count_mask, min_freq=hp.min_freq,
                                            max_size=hp.max_size, max_length=hp.max_length,
                                            truncation=hp.truncation, num_proc=hp.num_proc)
        vocab.save(folder / "vocab.json")
        bags = self._encode_bags(texts, count_mask, classes["train"][:counted], len(reader.labels), folder)
        start = 0
        for split in order:
            stop = start + len(reviews[split])
            np.save(folder / f"{split}.ids.npy", ids[start:stop])
            np.save(folder / f"{split}.lengths.npy", lengths[start:stop])
            np.save(folder / f"{split}.labels.npy", classes[split].astype(np.int16))
            if bags is not None:
                flat, counts, offsets, _ = bags
                np.save(folder / f"{split}.bag.npy", flat[offsets[start]:offsets[stop]])
                np.save(folder / f"{split}.bag_counts.npy", counts[start:stop])
            start = stop
        meta = {"splits": {s: len(reviews[s]) for s in order}, "vocab_size": len(vocab),
                "labels": list(reader.labels),
                "class_counts": np.bincount(classes["train"], minlength=len(reader.labels)).tolist()}
        if bags is not None:
            meta["bag_size"] = bags[3]
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))

    def _encode_bags(self, texts: list[str], count_mask: np.ndarray, counted_classes: np.ndarray, num_classes: int,
                     folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
        """With ``bag_ngrams``, every review's n-gram ids (end to end), their counts, offsets, and the size of the
        table of the n-grams of the counted training reviews, which is written into ``folder`` with their
        log-count ratios."""
        hp = self.hparams
        if not hp.bag_ngrams:
            return None
        words = Words.of(tokenize_bytes(t) for t in texts)
        counted = int(np.count_nonzero(count_mask))  # the training split's first reviews, as for the vocabulary
        table = NgramTable.build(words.first(counted), hp.bag_min_count, hp.bag_ngrams)
        flat, counts = table.encode(words)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        np.save(folder / "ngrams.npy", table.hashes)
        np.save(folder / "ngram_ratios.npy", log_count_ratios(flat[: offsets[counted]], counts[:counted],
                                                              counted_classes, len(table), num_classes))
        return flat, counts, offsets, len(table)

    def _unlabelled_texts(self) -> list[str]:
        """What word vectors learn from: the training split's reviews and IMDb's unlabelled ones (never
        validation's or test's)."""
        sources = self._sources()
        reviews, _, _ = self.read_splits(sources)
        texts = list(reviews["train"].texts)
        if "imdb" in sources:
            texts += read_imdb_unlabelled(sources["imdb"])
        return texts

    # --- splits -----------------------------------------------------------------------------------

    def read_splits(self, sources: dict[str, Path | None] | None = None, pseudo_labelled: bool = True
                    ) -> tuple[dict[str, Reviews], dict[str, np.ndarray], LabelReader]:
        """The raw reviews of every split (the seeded validation split made), their classes, and the label set:
        what ``prepare_data()`` encodes (and what a reference model, like ``scripts/reference.py``, reads). With
        ``pseudo_labels`` set and ``pseudo_labelled``, the training split ends with the unlabelled reviews that
        model labelled."""
        hp = self.hparams
        sources = self._sources() if sources is None else sources
        reviews: dict[str, Reviews] = {}
        if "imdb" in sources:
            reviews.update(read_imdb(sources["imdb"], ("train", "test"), hp.target))
        elif hp.target != "label":
            raise DataError(f"--data.target {hp.target} reads IMDb's file names; your own files name their classes "
                            "in --data.label_column")
        for split in SPLITS:
            if sources[split] is not None:
                reviews[split] = read_labelled(sources[split], hp.text_column, hp.label_column, hp.id_column)
        names = {split: str(sources[split] or sources.get("imdb")) for split in reviews}
        reader = LabelReader.from_training(reviews["train"].labels, hp.labels, names["train"])
        classes = {split: reader.read(r.labels, names[split], r.where) for split, r in reviews.items()}
        counts = np.bincount(classes["train"], minlength=len(reader.labels))
        if (counts > 0).sum() < 2:
            found = reader.labels[int(np.argmax(counts))]
            raise DataError(f"{names['train']}: every training review has label {found}; a classifier needs at "
                            "least two classes")
        if counts.min() < 2:
            rare = ", ".join(f"{reader.labels[i]} ({counts[i]})" for i in np.flatnonzero(counts < 2))
            raise DataError(f"{names['train']}: too few training reviews of {rare}; every class needs at least two")
        if "val" not in reviews and hp.val_fraction > 0:
            movies = reviews["train"].groups if hp.val_by_movie else None
            val_idx, train_idx = stratified_split(classes["train"], hp.val_fraction, hp.seed, movies)
            if not 0 < len(val_idx) < len(classes["train"]):
                raise DataError(f"{names['train']}: {len(classes['train'])} reviews are too few for a val_fraction "
                                f"of {hp.val_fraction}; set --data.val_file")
            reviews["val"], classes["val"] = reviews["train"].subset(val_idx), classes["train"][val_idx]
            reviews["train"], classes["train"] = reviews["train"].subset(train_idx), classes["train"][train_idx]
        if hp.pseudo_labels and pseudo_labelled:
            self._add_pseudo_labelled(reviews, classes, reader, sources)
        return reviews, classes, reader

    def _add_pseudo_labelled(self, reviews: dict[str, Reviews], classes: dict[str, np.ndarray], reader: LabelReader,
                             sources: dict[str, Path | None]) -> None:
        """Append IMDb's unlabelled reviews that the model in ``pseudo_labels`` is sure of to the training split,
        with its labels."""
        if "imdb" not in sources:
            raise DataError("--data.pseudo_labels labels IMDb's unlabelled reviews; with your own "
                            "--data.train_file, label unlabelled reviews with `sentiment predict` and add them "
                            "to it")
        sure, sure_classes = confidently_labelled(self.hparams.pseudo_labels, sources["imdb"], reader,
                                                  self.hparams.pseudo_confidence)
        reviews["train"] = reviews["train"].joined(sure)
        classes["train"] = np.concatenate([classes["train"], sure_classes])

    def dataset(self, split: str) -> EncodedReviews:
        """The encoded ``train``, ``val`` or ``test`` split (after ``setup``)."""
        if split not in self._splits:
            raise RuntimeError(f"the {split!r} split is not loaded: call setup() with the matching stage first")
        return self._splits[split]

    def _missing_split_message(self, split: str) -> str:
        if split == "test":
            if self.hparams.train_file:
                return "no test data: set --data.test_file"
            return f"{self._imdb_source()}: the IMDb source has no test split (aclImdb/test/pos, aclImdb/test/neg)"
        return "no validation data: set --data.val_file or a val_fraction above 0"

    # --- loaders ----------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        # the order follows the global seed (`seed_everything`) but draws nothing from the global RNG
        seed, trainer = torch.initial_seed() % 2**31, self.trainer
        if trainer is not None and trainer.world_size > 1:
            sampler = DistributedEpochShuffle(self.dataset("train"), seed, self.hparams.min_epoch_size,
                                              trainer.world_size, trainer.global_rank)
        else:
            sampler = EpochShuffle(self.dataset("train"), seed, self.hparams.min_epoch_size)
        loader = self._loader("train", sampler=sampler)
        if self._resume_state is not None:
            loader.load_state_dict(self._resume_state)
            self._resume_state = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict:
        """Where training stands within its epoch; checkpoints carry it so a resumed run continues there."""
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning restores this before it asks for the training loader (and, with a learning-rate
        # schedule sized by `estimated_stepping_batches`, before its own loader-state restore could apply)
        self._resume_state = state_dict.get("train_loader")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        dataset = UnlabelledReviews(self.hparams.predict_file, self.hparams.predict_batch_size,
                                    self.hparams.text_column, self.hparams.id_column)
        return DataLoader(dataset, batch_size=None, collate_fn=as_batch)  # batches as read, not visited

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # A predict batch's raw texts stay where they are: Lightning would visit every string to move it
        if isinstance(batch, dict) and "text" in batch:
            return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _loader(self, split: str, sampler: EpochShuffle | DistributedEpochShuffle | None = None) -> DataLoader:
        # An own generator: starting a pass over the data would otherwise draw from the global RNG and
        # shift the dropout noise of the training steps that follow (resumed runs would diverge).
        return ResumableLoader(self.dataset(split), batch_size=self.hparams.batch_size, sampler=sampler,
                               collate_fn=as_batch, num_workers=self.hparams.num_workers,
                               persistent_workers=self.hparams.num_workers > 0, generator=torch.Generator())


def settings_digest(settings: dict) -> str:
    """A short name for a set of settings, the same whenever they are: what cached files are keyed by."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stratified_split(classes: np.ndarray, fraction: float, seed: int, groups: list[str] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A seeded held-out share of every class (rounded, at least one of each), and the rest in their order.

    With ``groups``, whole groups are held out (every review of a movie on one side): groups are taken in a
    seeded order while they fit in what every class still needs, so each class gets its share, or as close to
    it as the group sizes allow. Held-out rows come shuffled, so validation batches mix the classes."""
    rng = np.random.default_rng(seed)
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
