"""``SentimentDataModule``: the Lightning adapter over a ``Corpus`` (``sentiment.data.corpus``).

``prepare_data`` writes the corpus's encoded cache; ``setup`` loads its splits; the loaders serve them as padded
batches (``sentiment.data.batches``). The facts a model needs (``vocab_size``, ``label_names``, ``bag_size``, ...) are
read from the cache.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader, rank_zero_info
from lightning.pytorch.utilities.seed import isolate_rng
from torch.utils.data import DataLoader

from sentiment.data.batches import (DistributedEpochShuffle, EncodedReviews, EpochShuffle, ResumableLoader,
                                UnlabelledReviews, as_batch)
from sentiment.data.corpus import CACHE_FOLDER, Corpus, class_counts
from sentiment.errors import DataError
from sentiment.data.pseudo_labels import Labeller
from sentiment.data.settings import GROUPS, Encoding, Imdb, Loading, Unlabelled, as_settings, plain
from sentiment.data.sources import frame_file
from sentiment.data.text import TextEncoder, Vocab

STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}  # the splits each stage reads


class SentimentDataModule(L.LightningDataModule):
    """Movie reviews as padded token-id batches: IMDb by default, or your own CSV/TSV/JSONL files.

    Batches are dicts: ``input_ids`` (B x T, right-padded with 0, T <= max_length), ``lengths`` (B), ``labels`` (B,
    class indices; with ``encoding.multi_label``, B x labels of 0/1) and, with a bag of n-grams, ``bag_ids``.
    Predict batches carry the raw ``text``, its row ``index`` and ``id`` instead: the model encodes them with the
    vocabulary saved in its checkpoint.

    Args:
        data_dir: folder for the IMDb data (``aclImdb/`` or ``aclImdb_v1.tar.gz``, downloaded when absent) and for
            the encoded-data cache.
        train_file: your own labelled training data instead of IMDb (.csv, .tsv, .jsonl, or fastText's .txt, whose
            lines carry ``__label__X``).
        val_file: labelled validation data; default: a seeded ``encoding.val_fraction`` of the training data.
        test_file: labelled test data; default with IMDb: the official test split.
        predict_file: reviews to classify (.csv, .tsv, .jsonl, or .txt with one review per line).
        text_column: column (or JSON key) holding the review; Kaggle's ``review`` is recognised.
        label_column: column holding the label: any values, words or numbers (0/1, pos/neg, positive/negative and
            true/false read as negative/positive); Kaggle's ``sentiment`` is recognised.
        id_column: optional column copied into predictions.
        encoding: how a text becomes model input (``sentiment.data.settings.Encoding``): truncation, vocabulary,
            the bag of n-grams, the label set, the validation split.
        unlabelled: what unlabelled reviews teach (``Unlabelled``): word vectors, pseudo labels, batches beside the
            labelled ones.
        loader: batch sizes, epoch size, worker processes and the files' character set (``Loading``).
        imdb: where IMDb is downloaded from (``Imdb``).
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
        encoding: Encoding = Encoding(),  # frozen: one shared default is safe, and LightningCLI shows its fields
        unlabelled: Unlabelled = Unlabelled(),
        loader: Loading = Loading(),
        imdb: Imdb = Imdb(),
    ) -> None:
        given = {k: v for k, v in locals().items() if k != "self" and not k.startswith("__")}  # the arguments, once
        super().__init__()
        groups = {name: as_settings(cls, given[name]) for name, cls in GROUPS.items()}
        self.encoding, self.unlabelled, self.loader, self.imdb = (groups[name] for name in GROUPS)
        self.predict_file = predict_file
        self.corpus = Corpus(Path(data_dir), train_file, val_file, test_file, text_column, label_column, id_column,
                             self.encoding, self.unlabelled, self.imdb, self.loader.num_proc, self.loader.charset)
        files = {k: v for k, v in given.items() if k not in GROUPS}
        # plain data, so that checkpoints load as data only; where IMDb is downloaded from, only if not the default
        self.save_hyperparameters({**files, **{name: plain(value) for name, value in groups.items()
                                               if not (name == "imdb" and value == Imdb())}})
        self._encoder: TextEncoder | None = None
        self._labels: tuple[str, ...] | None = None  # a trained model's, with its encoder (read_as)
        self._splits: dict[str, EncodedReviews] = {}
        self._train_loader: ResumableLoader | None = None
        self._resume_state: dict | None = None

    @classmethod
    def from_pandas(cls, train: Any, val: Any = None, test: Any = None, predict: Any = None, data_dir: str = "data",
                    **settings: Any) -> SentimentDataModule:
        """Data in memory: pandas DataFrames (or mappings of columns to lists: ``{"text": [...], "label": [...]}``) in
        place of files, read with the same column rules and one-line errors. Each is written once, named by its
        content, as a CSV file under ``data_dir/.sentiment_cache/frames/``, and cached as files are. ``settings``: the
        other arguments (``encoding={...}``, ``text_column``, ...)."""
        folder = Path(data_dir) / CACHE_FOLDER / "frames"
        text, label = settings.get("text_column", "text"), settings.get("label_column", "label")
        frames = {"train": train, "val": val, "test": test, "predict": predict}
        files = {f"{name}_file": str(frame_file(frame, name, folder, text, label if name != "predict" else None))
                 for name, frame in frames.items() if frame is not None}
        return cls(data_dir=data_dir, **files, **settings)

    def with_settings(self, labeller: Labeller | None = None, **changes: Any) -> SentimentDataModule:
        """A new data module of these settings with ``changes`` (a group as a dict of the settings that change:
        ``unlabelled={"pseudo_labels": path}``) and the ``labeller`` that gives pseudo labels."""
        settings = dict(self.hparams)
        for name, change in changes.items():
            settings[name] = {**settings.get(name, {}), **change} if name in GROUPS else change
        data = type(self)(**settings)
        data.labeller = labeller
        return data

    @property
    def labeller(self) -> Labeller | None:
        """The model that labels unlabelled reviews for ``unlabelled.pseudo_labels`` (a ``Predictor``)."""
        return self.corpus.labeller

    @labeller.setter
    def labeller(self, labeller: Labeller | None) -> None:
        self.corpus = self.corpus.replace(labeller=labeller)

    # --- facts the model needs, from the cache prepare_data() writes -------------------------------

    @property
    def text_encoder(self) -> TextEncoder:
        """Tokenizer, vocabulary, truncation and n-grams together: what a model needs to read raw text."""
        if self._encoder is None:
            self._encoder = self.corpus.text_encoder()
        return self._encoder

    vocab = property(lambda self: self.text_encoder.vocab)
    vocab_size = property(lambda self: len(self.vocab))
    pad_id = property(lambda self: Vocab.pad_id)
    # the classes in order, and training reviews per class, as prepare_data() found them (or encoding.labels gave)
    label_names = property(lambda self: list(self._labels or self.corpus.meta()["labels"]))
    bag_size = property(lambda self: len(self.text_encoder.ngrams or ()))  # n-grams the bag knows; 0: no bag
    multi_label = property(lambda self: self.encoding.multi_label)  # label sets: rows of 0/1, a column per label

    @property
    def class_counts(self) -> list[int]:
        """Training reviews per class (with ``multi_label``, per label)."""
        if self._labels is not None:
            return class_counts(np.asarray(self.dataset("train").labels), len(self._labels)).tolist()
        return list(self.corpus.meta()["class_counts"])

    # what a new model starts from: each n-gram's naive-Bayes log-count ratio (scaling the bag's weights) and
    # unlabelled.word_vectors' vectors; None without them, or when the data is read as a trained model reads (read_as)
    bag_ratios = property(lambda self: self.corpus.bag_ratios if self._labels is None else None)
    embedding_vectors = property(lambda self: self.corpus.embedding_vectors if self._labels is None else None)

    cache_dir = property(lambda self: self.corpus.cache_dir)

    @property
    def batch_size(self) -> int:
        """The training batches' size, ``loader.batch_size``, under the name Lightning's batch-size finder
        (``Tuner.scale_batch_size``) reads and sets."""
        return self.loader.batch_size

    @batch_size.setter
    def batch_size(self, size: int) -> None:
        self.loader = dataclasses.replace(self.loader, batch_size=size)
        self.hparams["loader"] = plain(self.loader)  # checkpoints keep the size the batches had

    # --- Lightning hooks: write the cache, load its splits ----------------------------------------

    def read_as(self, encoder: TextEncoder, labels: Sequence[str]) -> SentimentDataModule:
        """Read every split as a trained model reads: with its ``encoder`` (vocabulary, truncation, n-gram table) and
        its ``labels``, in memory, without a vocabulary or cache of this data's own; words it does not know are
        unknown words, and a label outside ``labels`` is a one-line error. What evaluating a model on new data
        needs (`sentiment validate` and `test` do this with the checkpoint's), and training one further on new data
        (`sentiment fit --init_from`; README shows the Python form). Returns this data module."""
        self._encoder, self._labels = encoder, tuple(labels)
        self._splits.clear()
        return self

    def prepare_data(self) -> None:
        """Download IMDb if needed and write the encoded cache. Sets no state (it runs on one process)."""
        trainer = self.trainer
        if trainer is not None and trainer.state.fn == "predict":
            return  # predicting reads only predict_file, never training data
        if self._labels is not None:  # read as a trained model reads: no cache; IMDb downloaded if it is read
            stage = trainer.state.fn if trainer is not None else "fit"
            if self.corpus.reads_imdb(STAGE_SPLITS.get(stage, ())):
                self.corpus.imdb_source()
            return
        # the random state is left as found (a labelling model's initial weights draw from it): a fit is the same
        # whether it wrote its cache or found it
        with isolate_rng():
            self.corpus.prepare(vectors=trainer is None or trainer.state.fn == "fit")

    def setup(self, stage: str) -> None:
        if stage == "predict":
            if self.predict_file is None:
                raise DataError("predicting needs an input file: set --data.predict_file")
            return
        wanted = [s for s in STAGE_SPLITS[stage] if s not in self._splits]
        where = None  # where unlabelled texts the recipe asks for are missing from, to say so once
        if stage == "fit" and self.unlabelled.per_batch and "unlabelled" not in self._splits:
            if self._labels is None and "unlabelled" in self.corpus.sources(fetch=False):
                wanted.append("unlabelled")
            else:
                where = ("in a fit from a trained model (--init_from)" if self._labels is not None else
                         "beside your --data.train_file (--data.unlabelled.file names some)")
        if wanted and self._labels is not None:
            self._splits.update(self.corpus.encoded_with(wanted, self.text_encoder, self._labels))
        elif wanted:
            if not (self.cache_dir / "meta.json").is_file():
                raise DataError("no encoded data: call prepare_data() before setup() (the Trainer does)")
            self._splits.update({split: self.corpus.load(split, self.corpus.missing_split) for split in wanted})
        if "unlabelled" in wanted and not len(self._splits["unlabelled"]):
            where = "in IMDb's archive (its train/unsup holds none)"
        if where:  # the recipe's losses on unlabelled texts rest
            rank_zero_info(f"--data.unlabelled.per_batch {self.unlabelled.per_batch}: no unlabelled texts {where}; "
                           "training on the labelled ones alone")

    def dataset(self, split: str) -> EncodedReviews:
        """The encoded ``train``, ``val`` or ``test`` split (after ``setup``)."""
        if split not in self._splits:
            raise RuntimeError(f"the {split!r} split is not loaded: call setup() with the matching stage first")
        return self._splits[split]

    # --- loaders ----------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        """The training batches; with ``unlabelled.per_batch``, each beside a batch of unlabelled reviews (a
        ``CombinedLoader`` of ``labelled`` and ``unlabelled`` batches, as long as the labelled ones)."""
        # the order follows the global seed (`seed_everything`) but draws nothing from the global RNG
        seed = torch.initial_seed() % 2**31
        loader = self._loader("train", sampler=self._shuffle("train", seed, self.loader.min_epoch_size))
        if self._resume_state is not None:
            loader.load_state_dict(self._resume_state)
            self._resume_state = None
        self._train_loader = loader
        size = self.unlabelled.per_batch if len(self._splits.get("unlabelled", ())) else 0
        if not size:
            return loader
        # an order of its own, as many rows as the labelled batches need (the unlabelled reviews cycled if fewer)
        unlabelled = self._loader("unlabelled", self._shuffle("unlabelled", seed + 1, len(loader) * size), size)
        return CombinedLoader({"labelled": loader, "unlabelled": unlabelled}, mode="min_size")

    def _shuffle(self, split: str, seed: int, min_rows: int) -> EpochShuffle | DistributedEpochShuffle:
        data, trainer = self.dataset(split), self.trainer
        if trainer is not None and trainer.world_size > 1:
            return DistributedEpochShuffle(data, seed, min_rows, trainer.world_size, trainer.global_rank)
        return EpochShuffle(data, seed, min_rows)

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
        corpus = self.corpus
        dataset = UnlabelledReviews(self.predict_file, self.loader.predict_batch_size, corpus.text_column,
                                    corpus.id_column, corpus.charset)
        return DataLoader(dataset, batch_size=None, collate_fn=as_batch)  # batches as read, not visited

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # A predict batch's raw texts stay where they are: Lightning would visit every string to move it
        if isinstance(batch, dict) and "text" in batch:
            return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _loader(self, split: str, sampler: EpochShuffle | DistributedEpochShuffle | None = None,
                batch_size: int | None = None) -> DataLoader:
        # An own generator: starting a pass over the data would otherwise draw from the global RNG and
        # shift the dropout noise of the training steps that follow (resumed runs would diverge).
        workers = self.loader.num_workers
        return ResumableLoader(self.dataset(split), batch_size=batch_size or self.loader.batch_size, sampler=sampler,
                               collate_fn=as_batch, num_workers=workers, persistent_workers=workers > 0,
                               generator=torch.Generator())
