"""``sentiment export``: a trained checkpoint as an ONNX model that any ONNX runtime can run.

    sentiment export --ckpt_path lightning_logs/version_0/checkpoints/best.ckpt --output model.onnx

Inputs ``input_ids`` (int64, batch x length, right-padded with 0) and ``lengths`` (int64, batch), and for a model
with a bag of n-grams ``bag_ids`` (int64, batch x n-grams, right-padded with 0; ``TextEncoder.model_inputs``
makes all three); output
``probabilities`` (float32, batch x labels, in the order of the ``labels`` metadata; calibrated with the
checkpoint's temperature, as the ``Predictor`` answers; of a multi-label model, each label's own probability, a text
having the labels whose probability reaches their ``thresholds``). The batch and the length are
free. The model's metadata carries what a runtime needs to make those inputs: ``text_encoder`` (JSON:
``sentiment.data.text.TextEncoder.to_dict()``, the vocabulary and tokenizer settings), and for other languages
``labels``, ``max_length``, ``truncation`` and ``multi_label`` (JSON) on their own, with ``thresholds`` (a list, one per
label) for a multi-label model.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch

from sentiment.errors import DataError
from sentiment.io import atomic_open
from sentiment.inference.predictor import Predictor

OPSET = 17
# The inputs in order (bag_ids: a model with a bag only), each with its free axes
FREE_AXES = {"input_ids": {0: "batch", 1: "length"}, "lengths": {0: "batch"}, "bag_ids": {0: "batch", 1: "ngrams"}}
INPUTS, OUTPUT = tuple(FREE_AXES), "probabilities"


class _Probabilities(torch.nn.Module):
    """The network with its answer as the calibrated probability of every label, as the ``Predictor`` gives it."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.predictor = predictor
        self.net = predictor.net

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, bag_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
        return self.predictor.probabilities(input_ids, lengths, bag_ids)


def metadata(predictor: Predictor) -> dict[str, str]:
    """What a runtime needs besides the graph, as ONNX metadata (strings)."""
    encoder = predictor.encoder
    meta = {"text_encoder": json.dumps(encoder.to_dict()), "labels": json.dumps(list(predictor.labels)),
            "max_length": json.dumps(encoder.max_length), "truncation": json.dumps(encoder.truncation),
            "multi_label": json.dumps(predictor.multi_label)}
    if predictor.multi_label:
        meta["thresholds"] = json.dumps([float(t) for t in predictor.thresholds])
    return meta


def export(ckpt_path: str, output: str = "model.onnx") -> None:
    """Write a checkpoint's model as ONNX, with its vocabulary, tokenizer settings and labels in the metadata.

    Args:
        ckpt_path: a checkpoint written by ``sentiment fit`` (e.g. lightning_logs/version_0/checkpoints/best.ckpt).
        output: the ONNX file to write (written whole or not at all).
    """
    try:
        import onnx
    except ImportError:
        raise DataError("sentiment export needs the onnx package: pip install onnx") from None
    predictor = Predictor.from_checkpoint(ckpt_path, compute="float32-plain")  # the network as trained, traced
    predictor.net.keep_inference_casts(False)  # the bag's padded form traces to plain ONNX gathers
    model = _Probabilities(predictor).eval()
    example = predictor.encoder.model_inputs(["an example review", "another"])
    inputs = [name for name in INPUTS if name in example]
    graph = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter maps nn.LSTM onto ONNX's LSTM operator, which keeps the length free;
        # torch.export (the new default) unrolls the recurrence over the example's length. Its deprecation
        # notice, and its note on LSTMs with batches (our states start at zero: no h0/c0 inputs), say nothing
        # a user can act on.
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=r".*variable length with LSTM")
        torch.onnx.export(model, tuple(example[name] for name in inputs), graph, input_names=inputs,
                          output_names=[OUTPUT], dynamo=False, opset_version=OPSET,
                          dynamic_axes={**{k: v for k, v in FREE_AXES.items() if k in inputs}, OUTPUT: {0: "batch"}})
    proto = onnx.load_from_string(graph.getvalue())
    for key, value in metadata(predictor).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"sentiment classifier exported from {Path(ckpt_path).name}"
    with atomic_open(output, "wb") as f:
        f.write(proto.SerializeToString())
    print(f"Wrote {output} ({Path(output).stat().st_size / 1e6:.1f} MB; labels {', '.join(predictor.labels)})")
