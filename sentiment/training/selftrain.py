"""Self-training: a teacher fitted on the labelled reviews labels IMDb's 50,000 unlabelled ones, and those it is
sure of join the student's training split.

    L.seed_everything(42)
    dm = SentimentDataModule(data_dir="data", unlabelled={"word_vectors": 128})
    dm.prepare_data()
    model = SentimentClassifier(vocab_size=dm.vocab_size, classes=dm.label_names, bag_size=dm.bag_size)
    trainer_kwargs = {"max_epochs": 3, "accelerator": "cpu", "gradient_clip_val": 1.0}
    dm = self_train(model, dm, trainer_kwargs, seed=42)   # the student's data: labelled + confidently labelled
    L.Trainer(**trainer_kwargs).fit(model, dm)

``sentiment fit --self_training true`` calls ``self_train`` with the fit's own model, data, Trainer settings and seed.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.seed import isolate_rng

from sentiment.data.datamodule import SentimentDataModule
from sentiment.data.settings import settings_digest
from sentiment.errors import DataError
from sentiment.inference.predictor import Predictor

# Trainer settings that do not change what a fit learns: left out of the teacher's cache key, and the teacher's
# Trainer sets them itself (it logs nothing and keeps its best checkpoint only)
UNLEARNT_TRAINER_KEYS = ("logger", "callbacks", "default_root_dir", "enable_progress_bar", "enable_model_summary",
                         "log_every_n_steps", "num_sanity_val_steps", "profiler", "enable_checkpointing", "barebones")
TRAINER_DEFAULTS = {k: p.default for k, p in inspect.signature(L.Trainer).parameters.items()
                    if p.default is not p.empty}


def check_self_training(pseudo_labels: str | None, trainer_kwargs: Mapping[str, Any]) -> None:
    """Refuse, in one line, what self-training cannot do: another labelling model, several processes."""
    if pseudo_labels:
        raise DataError(f"--data.unlabelled.pseudo_labels {pseudo_labels}: self-training labels the unlabelled reviews "
                        "with a teacher of its own; leave out --data.unlabelled.pseudo_labels (or self-training, to "
                        "learn from the model "
                        "given there)")
    settings = {**TRAINER_DEFAULTS, **trainer_kwargs}
    if settings["num_nodes"] != 1 or str(settings["devices"]) not in ("auto", "1"):
        raise DataError("self-training trains its teacher in this process first: run it with one device on one "
                        "node, or pass the teacher's checkpoint to a distributed fit as "
                        "--data.unlabelled.pseudo_labels")


def teacher_path(model: L.LightningModule, data: SentimentDataModule, trainer_kwargs: Mapping[str, Any],
                 seed: int | None) -> Path:
    """Where the teacher of this recipe is cached: in its data's cache folder (``prepare_data()`` has run), under
    a key of the model's settings, the word vectors it starts from, the batches (the unlabelled reviews' too), the
    Trainer settings that change what is learnt, and the seed."""
    trainer = {k: v for k, v in {**TRAINER_DEFAULTS, **trainer_kwargs}.items() if k not in UNLEARNT_TRAINER_KEYS}
    recipe = {"model": model_settings(model),
              "data": {"batch_size": data.loader.batch_size, "min_epoch_size": data.loader.min_epoch_size,
                       "unlabelled_per_batch": data.unlabelled.per_batch,
                       # their passes only where there are vectors: without them vector_epochs changes nothing
                       "word_vectors": data.unlabelled.word_vectors and [data.unlabelled.word_vectors,
                                                                         data.unlabelled.vector_epochs]},
              "trainer": trainer, "seed": seed}
    return data.cache_dir / f"teacher-{settings_digest(recipe)}.ckpt"


def self_train(model: L.LightningModule, data: SentimentDataModule, trainer_kwargs: Mapping[str, Any] | None = None,
               seed: int | None = None, callbacks: Sequence[L.Callback] = ()) -> SentimentDataModule:
    """The student's data: ``data`` (IMDb, labelled reviews only) with the reviews a teacher labels
    (``pseudo_labels``), the teacher being ``model``'s recipe fitted on ``data`` first.

    The teacher is a new model of ``model``'s settings, trained by a ``Trainer(**trainer_kwargs)`` as a plain fit
    seeded with ``seed`` would train it (``seed`` None: from the random state as it is), and cached in the data's
    cache folder under a key of those settings (``teacher_path``), so a later call finds it. The random state is
    left as found, so ``model`` trains the same student whether the teacher was trained or found.

    Args:
        model: the student, untrained; the teacher is built with its settings (its hyperparameters).
        data: the labelled data (no ``pseudo_labels``), IMDb with its unlabelled reviews.
        trainer_kwargs: the ``Trainer`` settings of the fit (epochs, precision, clipping, ...); those that only log
            or save (``UNLEARNT_TRAINER_KEYS``) are the teacher's own.
        seed: the fit's seed (``L.seed_everything``).
        callbacks: more callbacks of the teacher's fit (``sentiment fit`` hands it its ``CpuThreads``).
    """
    trainer_kwargs = dict(trainer_kwargs or {})
    check_self_training(data.unlabelled.pseudo_labels, trainer_kwargs)
    with isolate_rng():
        data.prepare_data()  # the labelled reviews encoded (and their word vectors): the teacher's key needs them
        path = teacher_path(model, data, trainer_kwargs, seed)
        if not path.is_file():
            rank_zero_info(f"Self-training: first a teacher on the labelled reviews alone, cached as {path}")
            if seed is not None:
                L.seed_everything(seed, workers=True, verbose=False)
            _fit_teacher(type(model)(**model_settings(model)), data, trainer_kwargs, path, callbacks)
    # the teacher labels the unlabelled reviews as a Predictor: the data room needs nothing of inference
    return data.with_settings(unlabelled={"pseudo_labels": str(path)}, labeller=Predictor.from_checkpoint(path))


def _fit_teacher(teacher: L.LightningModule, data: SentimentDataModule, trainer_kwargs: dict[str, Any],
                 path: Path, callbacks: Sequence[L.Callback] = ()) -> None:
    """Fit ``teacher`` and move its best checkpoint (by ``val/acc``) to ``path``; nothing is left half-written."""
    folder = Path(tempfile.mkdtemp(prefix=".teacher-", dir=path.parent))
    try:
        best = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/acc", mode="max",
                               enable_version_counter=False)
        learnt = {k: v for k, v in trainer_kwargs.items() if k not in UNLEARNT_TRAINER_KEYS}
        trainer = L.Trainer(**learnt, logger=False, callbacks=[best, *callbacks], default_root_dir=folder,
                            enable_model_summary=False,
                            enable_progress_bar=trainer_kwargs.get("enable_progress_bar", True))
        trainer.fit(teacher, datamodule=data)
        if not best.best_model_path:  # a run too short to validate (fast_dev_run) saves no best
            trainer.save_checkpoint(folder / "best.ckpt")
        os.replace(folder / "best.ckpt", path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def model_settings(model: L.LightningModule) -> dict[str, Any]:
    """A model's settings: its hyperparameters, without those LightningCLI adds (``_instantiator``, ...)."""
    return {k: v for k, v in model.hparams.items() if not k.startswith("_")}
