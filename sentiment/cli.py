"""The ``sentiment`` command: Lightning's own fit / validate / test / predict, CPU only, TensorBoard logs.

    sentiment fit --config configs/imdb.yaml
    sentiment test --config configs/imdb.yaml --ckpt_path lightning_logs/version_0/checkpoints/best.ckpt
    sentiment predict --ckpt_path best.ckpt --data.predict_file reviews.txt --prediction_writer.output_path out.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import re
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from sentiment.training.callbacks import AtomicCheckpointIO, AutoSave, CpuThreads, PredictionWriter
from sentiment.inference.checkpoint import load_data_settings, load_model_settings, read_checkpoint
from sentiment.training.classifier import SentimentClassifier
from sentiment.cpu import configure_cpu, native_bfloat16, usable_precision
from sentiment.data.datamodule import SentimentDataModule
from sentiment.errors import DataError
from sentiment.training.selftrain import check_self_training, self_train
from sentiment.data.settings import READING_SETTINGS, SPLIT_SETTINGS, Encoding, plain

SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
FROM_CHECKPOINT = ("validate", "test", "predict")  # subcommands that evaluate or run a trained model
# Subcommands that work from a checkpoint alone, without a Trainer: their module and function
AFTER_TRAINING = {"serve": ("sentiment.inference.serve", "serve"), "export": ("sentiment.inference.export", "export")}
# `validate` and `test` take these data settings from the checkpoint unless given; the others may name new data. The
# encoding must agree with the checkpoint's (the whole `encoding` at once), and so must the training data where it is
# read (a validation split carved from it); new validation and test files are read with the checkpoint's encoder.
# `predict` takes the encoding alone (it reads no training data).
AGREEING_KEYS = ("train_file", "text_column", "encoding")
CKPT_DATA_KEYS = (*AGREEING_KEYS, "label_column", "test_file", "val_file")
# The Trainer's part of the recipe we recommend, as the model's and the data module's defaults are theirs: so that
# `sentiment fit` alone, and any config, runs it unless told otherwise
RECIPE_TRAINER = {"accelerator": "cpu", "max_epochs": 3, "gradient_clip_val": 1.0, "log_every_n_steps": 20}
# The data module's part that its class leaves out, so that its batches stay plain for any LightningModule: unlabelled
# reviews beside each batch, which the model's defaults learn from (where there are none, the labelled batches alone)
RECIPE_DATA = {"data.unlabelled.per_batch": 32}

# What each subcommand does, whole sentences: `sentiment --help` lists them, each subcommand's --help opens with its own
SUBCOMMANDS = {
    "fit": "Train a model: read, tokenize and cache the data, then train, keeping the best checkpoint, TensorBoard "
           "logs and the run's config.yaml under lightning_logs/version_N.",
    "validate": "Score a trained model (--ckpt_path) on its validation split, carved from its training data as it "
                "was, or on --data.val_file.",
    "test": "Score a trained model (--ckpt_path) on labelled data it has not seen (--data.test_file), from any folder.",
    "predict": "Classify the texts of a file (--data.predict_file) with a trained model (--ckpt_path) and write one "
               "CSV row per line: the label and each class's probability.",
    "serve": "Serve a trained model over HTTP: a JSON API and a web page.",
    "export": "Write a trained model as ONNX, with its vocabulary and labels, for onnxruntime.",
}
USAGES = {
    "fit": "sentiment fit [--config CONFIG.yaml ...] [--data.train_file FILE] [options] [--verbose]",
    "validate": "sentiment validate --ckpt_path CKPT [--data.val_file FILE] [options]",
    "test": "sentiment test --ckpt_path CKPT --data.test_file FILE [options]",
    "predict": "sentiment predict --ckpt_path CKPT --data.predict_file FILE [--prediction_writer.output_path CSV] "
               "[options] [--verbose]",
}
# Options a subcommand accepts (they are Lightning's or the data module's) but does not use: its --help leaves them
# out. The model of validate, test and predict comes from the checkpoint (--model.* is refused), and they optimize
# nothing.
TRAINING_ONLY = ("optimizer", "lr_scheduler", *(f"trainer.{name}" for name in (
    "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches", "overfit_batches",
    "val_check_interval", "check_val_every_n_epoch", "num_sanity_val_steps", "log_every_n_steps",
    "enable_checkpointing", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
    "detect_anomaly", "reload_dataloaders_every_n_epochs", "enable_autolog_hparams")))
UNUSED_IN_HELP = {
    "validate": ("model", *TRAINING_ONLY, "trainer.limit_test_batches", "trainer.limit_predict_batches",
                 "data.unlabelled", "data.predict_file"),
    "test": ("model", *TRAINING_ONLY, "trainer.limit_val_batches", "trainer.limit_predict_batches",
             "data.unlabelled", "data.predict_file"),
    "predict": ("model", *TRAINING_ONLY, "trainer.limit_val_batches", "trainer.limit_test_batches",
                "data.unlabelled", "data.imdb", "data.encoding", "data.train_file", "data.val_file", "data.test_file",
                "data.label_column", "data.loader.batch_size", "data.loader.min_epoch_size", "data.loader.num_proc"),
}


def _quiet_lightning() -> None:
    """Warnings and log lines of Lightning's that a user of this command cannot act on; installed by ``cli_main``
    only, so that importing the package changes nothing for other code."""
    # Predict batches stream from a file (an IterableDataset), so Lightning cannot list their indices; the
    # writer numbers rows itself.
    warnings.filterwarnings("ignore", message=r".*Couldn't infer the batch indices", category=UserWarning)
    # validate/test/predict need only the weights, not the training run's ModelCheckpoint state.
    warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint need to be provided")
    # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvertisements) for f in logger.filters):
        logger.addFilter(_NoAdvertisements())


class _NoAdvertisements(logging.Filter):
    """Lightning prints tips for its cloud services on every run; this command is for local CPUs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def prepared(data: SentimentDataModule) -> SentimentDataModule:
    """``data`` with ``prepare_data()`` run (download, tokenize, cache), here rather than inside ``Trainer.fit``,
    because the model cannot be built before it; with ``--data.unlabelled.pseudo_labels``, the model named there
    labels the unlabelled reviews."""
    path = data.unlabelled.pseudo_labels
    if path and data.labeller is None:
        from sentiment.inference.predictor import Predictor

        data.labeller = Predictor.from_checkpoint(path)
    data.prepare_data()  # the second time, this only finds the cache
    return data


# What the best checkpoint is chosen by: the model's headline metric (for label sets, val/f1 replaces it)
CHECKPOINT_MONITOR = "val/acc"
# The options of `sentiment predict` that choose a multi-label model's labels: (name, type, help)
PREDICT_OPTIONS = (
    ("threshold", float, "A multi-label model: answer every label whose probability reaches this, instead of each "
                         "label's own threshold (chosen on validation for F1)."),
    ("top_k", int, "A multi-label model: answer the K most probable labels of each text (with --threshold, at most K "
                   "of those that reach it; fastText's predict-prob K THRESHOLD)."),
)
# The settings of a fit's config.yaml that only fitting has: validate, test and predict read them and set them aside
FIT_ONLY = ("checkpoint", "autosave", "cpu", "self_training", "init_from")
# What the model is built for, linked from the data module by `fit`: the model's argument and the data's property
LINKED = {"vocab_size": "vocab_size", "classes": "label_names", "multi_label": "multi_label", "bag_size": "bag_size"}


def _option_value(argv: list[str], option: str) -> str | None:
    """The value given to ``option`` on a command line (``--option V`` or ``--option=V``; the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(option + "="):
            value = arg[len(option) + 1:]
    return value


def default_precision() -> str:
    """``bf16-mixed`` on CPUs that compute in bfloat16 natively, else ``32-true`` (``native_bfloat16``)."""
    return "bf16-mixed" if native_bfloat16() else "32-true"


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and make sure a file can be written in it, or say why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DataError(f"{folder}: cannot write {what} there ({e.strerror or e})") from None


class SubcommandHelp(DefaultHelpFormatter):
    """Help that leaves out the options its subcommand does not use (``UNUSED_IN_HELP``), with the heading and
    description of a group left empty; the model's group says where the model comes from."""

    def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(prog, *args, **kwargs)
        self.unused = UNUSED_IN_HELP.get(prog.rsplit(" ", 1)[-1], ())  # `sentiment [options] predict`
        self.depth = 0  # inside a group's section: its description waits for its options
        self.description: str | None = None

    def is_unused(self, action: Any) -> bool:
        return any(action.dest == name or action.dest.startswith(name + ".") for name in self.unused)

    def start_section(self, heading: str | None) -> None:
        # a heading is the first line of a docstring: where it holds more than a sentence, the first one (Lightning's
        # `Trainer.test` would end "It's separated from fit to make sure you never run on your")
        if heading and ". " in heading:
            heading = heading.split(". ", 1)[0]
        super().start_section(heading)
        self.depth += 1

    def end_section(self) -> None:
        super().end_section()
        self.depth -= 1

    def add_text(self, text: str | None) -> None:
        if self.depth:
            self.description = text
        else:
            super().add_text(text)

    def add_arguments(self, actions: Any) -> None:
        shown = [action for action in actions if not self.is_unused(action)]
        if shown:
            super().add_text(self.description)
        elif actions and actions[0].dest == "model" and "model" in self.unused:
            super().add_text("The model comes from --ckpt_path, as it was trained.")
        self.description = None
        super().add_arguments(shown)


class SentimentCLI(LightningCLI):
    """``LightningCLI`` with the data module's vocabulary linked into the model, checkpoints by ``val/acc``,
    TensorBoard logging and a CSV prediction writer.

    Only LightningCLI's documented hooks are used (``subcommands``, ``add_arguments_to_parser``,
    ``parse_arguments``, ``before_*``, ``instantiate_trainer``): a new Lightning release keeps them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        argv = list(argv) if isinstance(argv, (list, tuple)) else []
        # `sentiment predict ...` builds only its own subcommand's parser: the other three took 0.1 s of the
        # 0.25 s from arguments to a running Trainer. `sentiment --help` (no subcommand first) gets all four.
        first = argv[0] if argv else None
        self.only_subcommand = first if first in LightningCLI.subcommands() else None
        # validate, test and predict work from a checkpoint: read once, here, before the parser is built, so that
        # its data settings become the defaults that a config or the command line may still override
        self.checkpoint: dict | None = None
        self.trained: dict | None = None  # with fit --init_from: the settings of the model it starts from
        self.checkpoint_path = _option_value(argv, "--ckpt_path")
        self.model_options = [arg.split("=")[0] for arg in argv if arg.startswith("--model.")]
        if self.only_subcommand in FROM_CHECKPOINT and self.checkpoint_path not in (None, *SPECIAL_CKPT_PATHS):
            self.checkpoint = read_checkpoint(self.checkpoint_path)
        parser_kwargs = dict(kwargs.pop("parser_kwargs", None) or {})
        for name in self.subcommands():  # add_arguments_to_parser knows each subcommand's parser by its name
            parser_kwargs[name] = {"description": SUBCOMMANDS[name], "usage": USAGES[name],
                                   **parser_kwargs.get(name, {}), "prog": f"sentiment {name}"}
        # a subcommand's parser formats its help with the main parser's formatter, which knows it by its name
        parser_kwargs.setdefault("formatter_class", SubcommandHelp)
        super().__init__(*args, parser_kwargs=parser_kwargs, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        every = LightningCLI.subcommands()
        only = getattr(self, "only_subcommand", None)
        return {only: every[only]} if only else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # each subcommand's parser is named `sentiment <subcommand>` (parser_kwargs); without subcommands
        # (build_cli(run=False)), the parser is fit's
        subcommand = parser.prog.rsplit(" ", 1)[-1]
        subcommand = subcommand if subcommand in LightningCLI.subcommands() else "fit"
        if subcommand == "fit":
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.monitor": CHECKPOINT_MONITOR, "checkpoint.mode": "max",
                                 "checkpoint.filename": "best", "checkpoint.save_last": False,  # AutoSave's
                                 "checkpoint.auto_insert_metric_name": False,
                                 # one best.ckpt, overwritten when improved, never best-v1.ckpt
                                 "checkpoint.enable_version_counter": False})
            parser.add_lightning_class_args(AutoSave, "autosave")
            parser.add_lightning_class_args(CpuThreads, "cpu")
            parser.set_defaults(RECIPE_DATA)
            parser.add_argument("--self_training", type=bool, default=False,
                                help="Learn from IMDb's 50,000 unlabelled reviews: this fit's recipe first trains a "
                                     "teacher on the labelled reviews alone (cached under data_dir: later fits "
                                     "reuse it); the unlabelled reviews it labels with at least "
                                     "--data.unlabelled.pseudo_confidence then join this fit's training split.")
            parser.add_argument("--init_from", type=str | None, default=None,
                                help="Train further from a trained model (a checkpoint of `sentiment fit`): start from "
                                     "its weights, vocabulary, bag of n-grams, label set and network, and train on "
                                     "this fit's data, read as the model reads (words it does not know are unknown "
                                     "words; a label outside its set is refused). The training settings (--model.lr, "
                                     "the schedule, --trainer.max_epochs) and the validation split are this fit's.")
            # Other subcommands read the model's size from the checkpoint instead.
            for fact in LINKED:
                parser.link_arguments("data", f"model.{fact}", compute_fn=self.linker(fact), apply_on="instantiate")
        if subcommand == "predict":
            parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
            parser.set_defaults({"trainer.logger": False})  # predicting logs nothing
            for name, kind, what in PREDICT_OPTIONS:
                parser.add_argument(f"--{name}", type=kind | None, default=None, help=what)
        if subcommand in FROM_CHECKPOINT:  # a fit's config.yaml may be reused: its fit-only settings are set aside
            for name in FIT_ONLY:
                parser.add_argument(f"--{name}", type=Any, default=None, help=argparse.SUPPRESS)
        if subcommand in FROM_CHECKPOINT and self.checkpoint is not None:
            saved = load_data_settings(self.checkpoint)
            keys = CKPT_DATA_KEYS if subcommand != "predict" else ("encoding",)  # predict reads no training data
            parser.set_defaults({f"data.{key}": saved[key] for key in keys if key in saved})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if subcommand != "fit" and not ckpt_path:
            raise DataError(f"`sentiment {subcommand}` needs a trained model: pass --ckpt_path "
                            "(e.g. lightning_logs/version_0/checkpoints/best.ckpt)")
        if subcommand == "fit":
            if ckpt_path == "last":
                self.resume_last()
            elif ckpt_path and ckpt_path not in SPECIAL_CKPT_PATHS:
                read_checkpoint(ckpt_path)  # a bad file is a one-line error before Lightning reads it
            if config.init_from:
                self.start_from(parser, config.init_from)
            return  # resuming: Lightning reads the model's settings and restores the run from the file
        if self.checkpoint is None or ckpt_path != self.checkpoint_path:  # named in a config file, say
            self.checkpoint, self.checkpoint_path = read_checkpoint(ckpt_path), ckpt_path
        if self.model_options:  # the checkpoint's settings would win: say so rather than drop them silently
            raise DataError(f"`sentiment {subcommand}` takes the model from its checkpoint: leave out "
                            f"{', '.join(self.model_options)}")
        # the training data must agree only where it is read: a validation split carved from it
        reads_training = subcommand == "validate" and not config.data.val_file
        self.check_data_agrees(config.data, AGREEING_KEYS if reads_training else ("encoding",))
        # The model as the checkpoint built it, from the file already read (Lightning would read it again, and
        # knows no older layout): the path comes back in before_instantiate_classes, for the config.yaml a run saves.
        settings = load_model_settings(self.checkpoint, self.checkpoint_path)
        self.config = parser.parse_object({subcommand: {"model": settings}}, self.config)
        self.config[subcommand].ckpt_path = None

    def linker(self, fact: str) -> Any:
        """``linked`` for one fact, named for `--help`'s list of linked arguments."""
        def compute(data: SentimentDataModule) -> Any:
            return self.linked(fact, data)

        compute.__name__ = compute.__qualname__ = f"prepared_{fact}"
        return compute

    def linked(self, fact: str, data: SentimentDataModule) -> Any:
        """What the model is built for (``LINKED``): the data's, as ``prepare_data()`` finds them, or with
        ``--init_from``, the trained model's."""
        if self.trained is not None:
            return self.trained[fact]
        return getattr(prepared(data), LINKED[fact])

    def start_from(self, parser: LightningArgumentParser, path: str) -> None:
        """``fit --init_from``: the network's settings and the encoding are the checkpoint's, but for the validation
        split's; options that say otherwise are refused in one line."""
        config = self.config.fit
        self.checkpoint, self.checkpoint_path = read_checkpoint(path), path
        self.trained = load_model_settings(self.checkpoint, path)
        net_options = [option for option in self.model_options if option.startswith("--model.net")]
        if net_options:
            raise DataError(f"--init_from {path}: the network is the checkpoint's; leave out {', '.join(net_options)}")
        if config.self_training or config.data.unlabelled.pseudo_labels:
            raise DataError(f"--init_from {path}: a fit from a trained model learns from labelled data only; leave out "
                            "--self_training and --data.unlabelled.pseudo_labels")
        saved = Encoding.from_dict(load_data_settings(self.checkpoint)["encoding"])
        given = Encoding.from_dict(config.data.encoding.as_dict())
        # a reading setting left at its default is the checkpoint's; one given otherwise would not be honoured
        refused = given.differences(saved, [name for name in READING_SETTINGS
                                            if getattr(given, name) != getattr(Encoding(), name)])
        if refused:
            raise DataError(f"--init_from {path}: the model reads text as it was trained: "
                            f"{'; '.join(refused)}; leave these --data.encoding settings out")
        encoding = dataclasses.replace(saved, **{name: getattr(given, name) for name in SPLIT_SETTINGS})
        self.config = parser.parse_object(
            {"fit": {"model": {"net": self.trained["net"]}, "data": {"encoding": plain(encoding)}}}, self.config)

    def check_data_agrees(self, data: Namespace, keys: tuple[str, ...]) -> None:
        """Refuse, in one line, data that would be read otherwise than the checkpoint's model was trained on."""
        saved = load_data_settings(self.checkpoint)
        for key in keys:
            if key == "encoding":
                differences = Encoding.from_dict(data.encoding.as_dict()).differences(
                    Encoding.from_dict(saved["encoding"]))
                if differences:
                    raise DataError(f"--data.encoding differs from the checkpoint's: {'; '.join(differences)}; the "
                                    "model reads reviews as it was trained: leave --data.encoding out")
            elif key in saved and data[key] != saved[key]:
                raise DataError(f"--data.{key} {data[key]} differs from the checkpoint's {saved[key]}: the model reads "
                                f"reviews as it was trained; leave --data.{key} out")

    def load_weights(self) -> None:
        """The weights, text encoder and temperature of the checkpoint already read (validate, test and predict give
        the Trainer no path to read it again). New data is read as the model reads: new files need no training
        data."""
        self.model.load_state_dict(self.checkpoint["state_dict"])
        self.model.on_load_checkpoint(self.checkpoint)
        self.datamodule.read_as(self.model.text_encoder, self.model.labels)
        if self.subcommand in FROM_CHECKPOINT:
            self.config_init[self.subcommand].ckpt_path = None

    def before_validate(self) -> None:
        self.load_weights()

    def before_test(self) -> None:
        self.load_weights()

    def before_predict(self) -> None:
        self.load_weights()
        config = self.config_init.predict
        self.model.predict_options = {name: config[name] for name, _, _ in PREDICT_OPTIONS if config[name] is not None}
        # predictions go to the CSV writer as they are made; keeping them all would grow memory
        self.config_init.predict.return_predictions = False

    def resume_last(self) -> None:
        """``fit --ckpt_path last``: continue the newest run's ``last.ckpt``, logging into the same version."""
        root = Path(self.config.fit.trainer.default_root_dir or os.getcwd()) / "lightning_logs"
        candidates = sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise DataError(f"--ckpt_path last: no lightning_logs/version_*/checkpoints/last.ckpt under {root.parent}")
        last = candidates[-1]
        # resuming writes into the run's own, non-empty checkpoint folder on purpose
        warnings.filterwarnings("ignore", message=rf"Checkpoint directory {re.escape(str(last.parent))} exists")
        self.config.fit.ckpt_path = str(last)
        read_checkpoint(last)
        self.resume_version = int(last.parent.parent.name.removeprefix("version_"))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in FROM_CHECKPOINT:
            config.ckpt_path = self.checkpoint_path
        trainer = config.trainer
        trainer.precision = usable_precision(trainer.precision)  # a bf16 config from another machine runs here too
        if trainer.logger is None or trainer.logger is True:
            # TensorBoard, without Lightning's placeholder `hp_metric`: the model logs real ones
            trainer.logger = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger", init_args=Namespace(
                save_dir=trainer.default_root_dir or os.getcwd(), name="lightning_logs", default_hp_metric=False,
                version=getattr(self, "resume_version", None)))
        if self.subcommand == "predict":
            if not config.data.predict_file:
                raise DataError("`sentiment predict` needs reviews to classify: pass --data.predict_file FILE")
            self.save_config_callback = None  # predicting logs nothing; no config.yaml in the working folder
            check_writable(Path(config.prediction_writer.output_path).parent, "predictions")
        else:
            # say so before any work is done, not when the first checkpoint or cache file is written
            check_writable(Path(trainer.default_root_dir or os.getcwd()), "logs and checkpoints")
            check_writable(Path(config.data.data_dir), "the data cache")
        if self.subcommand == "fit" and config.self_training:  # before any work: what it cannot do
            check_self_training(config.data.unlabelled.pseudo_labels, config.trainer)

    def before_fit(self) -> None:
        """With ``--self_training``, the teacher first (``sentiment.training.selftrain``): the student learns from the
        data it labels."""
        config = self.config.fit
        if config.init_from:  # a resumed run (--ckpt_path) then restores its own weights over these
            self.load_weights()
        headline = f"val/{self.model.headline}"  # label sets: the labels' mean F1 (macro), not accuracy
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.monitor == CHECKPOINT_MONITOR != headline:
                callback.monitor = headline
        if config.self_training:
            threads = [callback for callback in self.trainer.callbacks if isinstance(callback, CpuThreads)]
            self.datamodule = self_train(self.model, self.datamodule, config.trainer.as_dict(), config.seed_everything,
                                         threads)

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def build_cli(args: list[str] | None = None, run: bool = True) -> SentimentCLI:
    """The ``sentiment`` command's LightningCLI; with ``run=False``, the model, data module and Trainer that
    ``sentiment fit ARGS`` would build (configs layered as on the command line), without running anything."""
    _quiet_lightning()
    if args is not None:  # called from Python with its own arguments: whatever sys.argv holds is not for us
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within")
    return SentimentCLI(
        SentimentClassifier,
        SentimentDataModule,
        trainer_defaults={**RECIPE_TRAINER, "precision": default_precision()},
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": OVERVIEW},
        args=args,
        run=run,
    )


OVERVIEW = "Train, evaluate, run and serve a compact LSTM text classifier on CPUs."


def overview() -> str:
    """``sentiment --help``: every subcommand, Lightning's four and ours, each said whole."""
    lines = [f"usage: sentiment {{{','.join(SUBCOMMANDS)}}} [options]", "", OVERVIEW, "", "subcommands:"]
    for name, description in SUBCOMMANDS.items():
        lines += textwrap.wrap(description, 100, initial_indent=f"  {name:<10}", subsequent_indent=" " * 12)
    lines += ["", "`sentiment SUBCOMMAND --help` lists a subcommand's options;",
              "`sentiment SUBCOMMAND --print_config` shows its whole configuration;",
              "`--verbose` (or SENTIMENT_DEBUG=1) shows an error's full traceback instead of one line.", "",
              "examples:", "  sentiment fit --config configs/imdb.yaml",
              "  sentiment predict --ckpt_path lightning_logs/version_0/checkpoints/best.ckpt "
              "--data.predict_file reviews.txt"]
    return "\n".join(lines) + "\n"


def cli_main(args: list[str] | None = None) -> None:
    """Entry point of ``sentiment`` and ``python -m sentiment``."""
    argv = sys.argv[1:] if args is None else list(args)
    debug = "--verbose" in argv or bool(os.environ.get("SENTIMENT_DEBUG"))
    if argv[:1] in (["fit"], ["predict"]):
        # ours there, not a setting: a fit's config.yaml would carry it into a `test` that reuses the file, where
        # --verbose is the Trainer's (print the scores) and `false` would hide them
        argv = [arg for arg in argv if arg != "--verbose"]
        args = argv
    if not argv or argv[0] in ("-h", "--help"):
        print(overview(), end="", file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    configure_cpu()
    try:
        if argv[:1] and argv[0] in AFTER_TRAINING:  # not Trainer methods, so not LightningCLI subcommands
            from jsonargparse import CLI

            module, function = AFTER_TRAINING[argv[0]]
            CLI(getattr(importlib.import_module(module), function), args=argv[1:], as_positional=False,
                prog=f"sentiment {argv[0]}")
            return
        build_cli(args)
    except (DataError, OSError, ValueError) as e:  # bad input, or a file system that refuses (full disk, permissions)
        if isinstance(e.__cause__, (DataError, OSError)) and type(e) is ValueError:
            e = e.__cause__  # raised inside a link's compute_fn, which jsonargparse wraps in a ValueError
        elif not isinstance(e, (DataError, OSError)):
            raise
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
