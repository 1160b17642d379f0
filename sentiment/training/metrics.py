"""The metrics a classifier logs, by task: torchmetrics' binary, multiclass and multilabel families, keyed as logged
(``val/acc``, ``val/f1``, ...; ``class_f1`` is logged per label as ``f1/<label>``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import MeanAbsoluteError, Metric
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MultilabelAUROC,
    MultilabelExactMatch,
    MultilabelF1Score,
    MultilabelHammingDistance,
    MultilabelPrecision,
    MultilabelRecall,
)

# The headline of each task: shown on the progress bar and chosen by (the best checkpoint)
HEADLINE = {False: "acc", True: "f1"}  # by multi_label: accuracy, or the labels' mean F1 (macro)
# Copied to the hparams tab (as hp/val_<name>), by multi_label
HPARAM_METRICS = {False: ("acc", "f1", "auroc"), True: ("f1", "f1_micro", "jaccard")}


class ExampleJaccard(Metric):
    """Example-based Jaccard index of label sets: per text, the labels both predicted and true over the labels
    predicted or true (1 where both are empty), averaged over texts. ``preds`` and ``target``: B x labels, 0/1."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = preds.bool(), target.bool()
        both = (preds & target).sum(1).double()
        either = (preds | target).sum(1).double()
        self.total += torch.where(either > 0, both / either.clamp(min=1), torch.ones_like(both)).sum()
        self.count += len(preds)

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


def task_metrics(labels: Sequence[str], multi_label: bool = False, numeric: bool = False) -> dict[str, Metric]:
    """The evaluation metrics of a label set: binary (two classes), multiclass (more; ``numeric`` labels add the mean
    absolute error of the predicted value) or multilabel (macro and micro F1, each label's F1, example-based Jaccard,
    subset accuracy, Hamming loss; precision and recall are macro)."""
    k = len(labels)
    if multi_label:
        return {"f1": MultilabelF1Score(k), "f1_micro": MultilabelF1Score(k, average="micro"),
                "precision": MultilabelPrecision(k), "recall": MultilabelRecall(k), "auroc": MultilabelAUROC(k),
                "jaccard": ExampleJaccard(), "subset_acc": MultilabelExactMatch(k),
                "hamming": MultilabelHammingDistance(k), "class_f1": MultilabelF1Score(k, average=None)}
    if k == 2:
        return {"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "precision": BinaryPrecision(),
                "recall": BinaryRecall(), "auroc": BinaryAUROC()}
    metrics = {"acc": MulticlassAccuracy(k, average="micro"), "f1": MulticlassF1Score(k),
               "precision": MulticlassPrecision(k), "recall": MulticlassRecall(k), "auroc": MulticlassAUROC(k),
               "class_f1": MulticlassF1Score(k, average=None)}
    if numeric:
        metrics["mae"] = MeanAbsoluteError()
    return metrics


def training_metric(labels: Sequence[str], multi_label: bool = False) -> tuple[str, Metric]:
    """What training logs once an epoch, of its own decisions (0/1 labels; no checks: half the cost): accuracy, or
    for label sets the micro F1 at probability 0.5."""
    k = len(labels)
    if multi_label:
        return "f1", MultilabelF1Score(k, average="micro", validate_args=False)
    if k == 2:
        return "acc", BinaryAccuracy(validate_args=False)
    return "acc", MulticlassAccuracy(k, average="micro", validate_args=False)
