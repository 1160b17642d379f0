"""Checkpoint files: the one place that reads them (as data only, validated, with one-line errors) and writes
them (atomically), and that rebuilds a trained network and its text encoder from one.

Plain PyTorch: no Lightning import, so the ``Predictor``, ``sentiment serve`` and ``sentiment export`` start
in about the time of ``import torch``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sentiment.errors import DataError
from sentiment.io import atomic_open
from sentiment.labels import BINARY
from sentiment.model import SentimentNet
from sentiment.settings import GROUPS, Encoding
from sentiment.text import TextEncoder

ENCODER_KEY = "text_encoder"  # the TextEncoder's plain-data form, beside the weights
CALIBRATION_KEY = "calibration"  # {"temperature": T}, fitted on validation (sentiment.calibration)
NETWORK_PREFIX = "net."  # the network's weights in the LightningModule's state_dict
# What rebuilds the network: SentimentNet's own arguments, read from the checkpoint's hyperparameters
NETWORK_SETTINGS = tuple(k for k in inspect.signature(SentimentNet).parameters if k != "num_classes")  # from labels


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


def network_settings(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The network's settings among a classifier's hyperparameters."""
    return {key: hparams[key] for key in NETWORK_SETTINGS if key in hparams}


def load_network(checkpoint: Mapping[str, Any]) -> SentimentNet:
    """The trained network of a checkpoint read by ``read_checkpoint``, in eval mode."""
    net = SentimentNet(**network_settings(checkpoint["hyper_parameters"]), num_classes=len(load_labels(checkpoint)))
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


def load_text_encoder(checkpoint: Mapping[str, Any], path: str | os.PathLike = "checkpoint") -> TextEncoder:
    """The tokenizer settings and vocabulary a checkpoint's model was trained with."""
    if ENCODER_KEY not in checkpoint:
        raise DataError(f"{path}: this checkpoint has no vocabulary (it was saved without a data module); "
                        "checkpoints written by `sentiment fit` carry one")
    return TextEncoder.from_dict(checkpoint[ENCODER_KEY])


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


def load_encoding(checkpoint: Mapping[str, Any]) -> Encoding:
    """How the checkpoint's model turned text into input (its data module's ``encoding``)."""
    return Encoding.from_dict(load_data_settings(checkpoint)["encoding"])
