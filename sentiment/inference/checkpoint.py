"""Checkpoint files: the one place that reads them (as data only, validated, with one-line errors) and writes
them (atomically), and that rebuilds a trained network and its text encoder from one.

Plain PyTorch: no Lightning import, so the ``Predictor``, ``sentiment serve`` and ``sentiment export`` start
in about the time of ``import torch``.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sentiment.errors import DataError
from sentiment.io import atomic_open
from sentiment.data.labels import BINARY
from sentiment.network.model import NetConfig, SentimentNet
from sentiment.data.settings import GROUPS, Encoding
from sentiment.data.text import TextEncoder, Vocab

ENCODER_KEY = "text_encoder"  # the TextEncoder's plain-data form, beside the weights
# {"temperature": T} and, for label sets, {"thresholds": [...]}: fitted on validation (sentiment.training.calibration)
CALIBRATION_KEY = "calibration"
NETWORK_PREFIX = "net."  # the network's weights in the LightningModule's state_dict
# Network settings that checkpoints before NetConfig may hold and that no longer exist: the hashed-bigram bag's
GONE_NETWORK_SETTINGS = ("ngram_buckets", "ngram_dim")  # a model is readable if the first is 0 (no such bag)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint as data only (tensors, numbers, strings, lists, dicts), or say what is wrong with it.

    Nothing in a checkpoint written by ``sentiment fit`` needs more; a file that carries pickled Python
    objects is refused rather than run.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # the unpickler met a reference to Python code
            raise DataError(f"{path}: refused: it holds pickled Python objects, not only weights and plain data "
                            "(checkpoints written by `sentiment fit` load)") from None
        raise DataError(f"{path}: not a PyTorch checkpoint (unreadable pickle data)") from None
    except Exception as e:  # torch.load raises many kinds on a file that is not a checkpoint
        detail = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
        raise DataError(f"{path}: not a PyTorch checkpoint ({detail})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise DataError(f"{path}: not a Lightning checkpoint (no state_dict)")
    if "vocab_size" not in (checkpoint.get("hyper_parameters") or {}):
        raise DataError(f"{path}: not a sentiment checkpoint (no vocab_size among its hyperparameters)")
    return checkpoint


def write_checkpoint(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file beside ``path``, then rename it into place: a run killed while saving leaves
    the previous checkpoint whole, never a truncated one."""
    with atomic_open(path, "wb") as f:
        torch.save(checkpoint, f)


def load_model_settings(checkpoint: Mapping[str, Any], path: str | os.PathLike = "checkpoint") -> dict[str, Any]:
    """The classifier's arguments a checkpoint was written with, in today's layout: the network's settings as one
    ``net`` dict. Checkpoints written before ``NetConfig`` kept them beside the classifier's own: they are read into
    it here, the one place that knows the old layout."""
    settings = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}  # not LightningCLI's
    net = dict(settings.pop("net", None) or {})
    for field in dataclasses.fields(NetConfig):
        if field.name in settings:
            net.setdefault(field.name, settings.pop(field.name))
    buckets, _ = (settings.pop(name, 0) for name in GONE_NETWORK_SETTINGS)
    if buckets:
        raise DataError(f"{path}: this model has a bag of hashed bigrams (ngram_buckets), which this sentiment release "
                        "no longer has; retrain it (the default bag of n-grams reads every word)")
    settings.setdefault("bag_size", 0)
    settings.setdefault("multi_label", False)
    for fixed in ("pad_id", "unk_id"):  # always the vocabulary's: checkpoints before NetConfig named them
        settings.pop(fixed, None)
    return {**settings, "net": net}


def load_network(checkpoint: Mapping[str, Any], path: str | os.PathLike = "checkpoint") -> SentimentNet:
    """The trained network of a checkpoint read by ``read_checkpoint``, in eval mode."""
    settings = load_model_settings(checkpoint, path)
    net = SentimentNet(settings["vocab_size"], NetConfig(**settings["net"]), num_classes=len(load_labels(checkpoint)),
                       bag_size=settings["bag_size"], pad_id=Vocab.pad_id, unk_id=Vocab.unk_id,
                       multi_label=settings["multi_label"])
    weights = {key[len(NETWORK_PREFIX):]: value for key, value in checkpoint["state_dict"].items()
               if key.startswith(NETWORK_PREFIX)}
    net.load_state_dict(weights)
    return net.eval()


def load_labels(checkpoint: Mapping[str, Any]) -> tuple[str, ...]:
    """The classes a checkpoint's model tells apart, in order; checkpoints from before label sets: binary."""
    return tuple(checkpoint["hyper_parameters"].get("classes") or BINARY)


def load_temperature(checkpoint: Mapping[str, Any]) -> float:
    """The temperature that calibrates the model's probabilities (1.0 where none was fitted)."""
    return float((checkpoint.get(CALIBRATION_KEY) or {}).get("temperature", 1.0))


def load_thresholds(checkpoint: Mapping[str, Any], labels: int) -> torch.Tensor:
    """Each label's threshold, for a model of label sets (0.5 where none was chosen)."""
    saved = (checkpoint.get(CALIBRATION_KEY) or {}).get("thresholds")
    return torch.tensor(saved, dtype=torch.float32) if saved else torch.full((labels,), 0.5)


def load_text_encoder(checkpoint: Mapping[str, Any], path: str | os.PathLike = "checkpoint") -> TextEncoder:
    """The tokenizer settings and vocabulary a checkpoint's model was trained with."""
    if ENCODER_KEY not in checkpoint:
        raise DataError(f"{path}: this checkpoint has no vocabulary (it was saved without a data module); "
                        "checkpoints written by `sentiment fit` carry one")
    return TextEncoder.from_dict(checkpoint[ENCODER_KEY])


def add_inference_state(checkpoint: dict[str, Any], encoder: TextEncoder | None, temperature: float,
                        thresholds: torch.Tensor | None = None) -> dict[str, Any]:
    """What a trained model needs besides its weights to answer raw text, written into ``checkpoint``: its text
    encoder (vocabulary, tokenizer settings, n-gram table, as plain data), its calibrating temperature and, for
    label sets, each label's threshold."""
    checkpoint[CALIBRATION_KEY] = {"temperature": float(temperature)}
    if thresholds is not None:
        checkpoint[CALIBRATION_KEY]["thresholds"] = [float(t) for t in thresholds]
    if encoder is not None:
        checkpoint[ENCODER_KEY] = encoder.to_dict()
    return checkpoint


def load_data_settings(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The data module's settings a checkpoint's model was trained with, each group (``encoding``, ...) a dict of its
    settings. Checkpoints written before the groups existed kept every setting at the top: they are read into their
    groups here, the one place that knows the old layout."""
    saved = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    settings = {key: value for key, value in saved.items() if not key.startswith("_")}
    for name, cls in GROUPS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        group = dict(saved.get(name) or {})
        for key in fields & saved.keys():
            group.setdefault(key, settings.pop(key))
        settings[name] = group
    settings["encoding"] = Encoding.from_dict(settings["encoding"]).to_dict()  # what older settings meant
    return settings
