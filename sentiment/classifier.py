"""``SentimentClassifier``: the LightningModule that trains, evaluates and serves ``SentimentNet``.

It owns the loss, the metrics and their logging, one shared step for train/val/test, ``predict_step`` and
the optimizer. It also carries the text encoder (tokenizer settings and vocabulary) inside its
checkpoints, so a trained model reads raw reviews with no data module present.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryConfusionMatrix,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
)

from sentiment.checkpoint import ENCODER_KEY
from sentiment.errors import DataError
from sentiment.model import SentimentNet, adversarial_losses, binary_loss
from sentiment.predictor import Predictor
from sentiment.text import TextEncoder, Vocab

LrSchedule = Literal["constant", "onecycle", "cosine"]


class SentimentClassifier(L.LightningModule):
    """Binary sentiment classifier over token ids, logging accuracy, F1, precision, recall and AUROC.

    The defaults are the recipe we recommend (``configs/imdb.yaml``): ``SentimentClassifier(vocab_size=...)``
    is the good model. The network's settings are ``SentimentNet``'s arguments, passed through as they are
    (``hidden_dim=64, pooling="last"``, ...; ``--model.hidden_dim`` on the command line).

    Args:
        vocab_size: number of token ids (linked from the data module by the CLI; read from the
            checkpoint when predicting).
        pad_id: id of the padding token.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        lr_schedule: ``constant``, ``onecycle`` (warm up, then anneal) or ``cosine`` (warm up, then cosine decay).
        warmup_ratio: share of the training steps spent warming up (``onecycle`` and ``cosine``).
        label_smoothing: pull the training targets this far towards 0.5.
        adversarial: adversarial training: the norm of the shift of each review's embeddings along the loss
            gradient, trained on beside the clean input (0: off; about twice the training time).
        **network: the network's settings: ``SentimentNet``'s arguments (``embed_dim``, ``hidden_dim``, ``cell``,
            ``pooling``, ...).
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        pad_id: int = Vocab.pad_id,
        lr: float = 4e-3,
        weight_decay: float = 0.01,
        lr_schedule: LrSchedule = "onecycle",
        warmup_ratio: float = 0.1,
        label_smoothing: float = 0.0,
        adversarial: float = 2.0,  # gains more than a wider or longer model for the same time (BENCHMARKS.md)
        **network: Any,
    ) -> None:
        super().__init__()
        if vocab_size is None:
            raise ValueError("vocab_size is required: the CLI links it from the data module when fitting, "
                             "and reads it from the checkpoint (--ckpt_path) otherwise")
        self.save_hyperparameters()
        self.net = SentimentNet(vocab_size, pad_id=pad_id, unk_id=Vocab.unk_id, **network)
        # every network setting, defaults included: a checkpoint rebuilds its network whatever the defaults become
        defaults = {k: p.default for k, p in inspect.signature(SentimentNet).parameters.items()
                    if p.default is not p.empty and k not in self.hparams and k != "unk_id"}
        self.save_hyperparameters({**self.hparams, **defaults})
        self.text_encoder: TextEncoder | None = None
        metrics = MetricCollection({"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "precision": BinaryPrecision(),
                                    "recall": BinaryRecall(), "auroc": BinaryAUROC()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.train_acc = BinaryAccuracy(validate_args=False)  # our own decisions and 0/1 labels: half the cost
        self.val_confusion = BinaryConfusionMatrix()
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids, lengths)

    # --- train / val / test ----------------------------------------------------------------------------

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        labels = batch["labels"]
        n = labels.numel()
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        if stage == "train" and self.hparams.adversarial > 0:
            loss, adversarial_loss, logits = adversarial_losses(self.net, batch["input_ids"], batch["lengths"], labels,
                                                                self.hparams.adversarial, smoothing)
            objective = loss + adversarial_loss  # what training minimizes; train/loss stays the clean loss
            self.log("train/adversarial_loss", adversarial_loss, batch_size=n)
        else:
            logits = self.net(batch["input_ids"], batch["lengths"])
            objective = loss = binary_loss(logits, labels, smoothing)
        if stage == "train":
            # decisions, not probabilities: torchmetrics would check every probability is in [0, 1] each step
            self.train_acc.update((logits.detach() > 0).int(), labels)  # logged once, at the epoch end
            self.log("train/loss", loss, prog_bar=True, batch_size=n)
            return objective
        probs = torch.sigmoid(logits.detach())
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(probs, labels)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        if stage == "val":
            self.val_confusion.update(probs, labels)
            self._val_outputs.append((probs.cpu(), labels.cpu()))
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def on_train_epoch_end(self) -> None:
        # Each self.log call costs Lightning about 0.6 ms, so the accuracy is logged once an epoch, not every step
        self.log("train/acc", self.train_acc.compute(), prog_bar=True, sync_dist=True)
        self.train_acc.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        acc = values.pop("val/acc")
        # compute() already gathers every process's reviews; sync_dist only keeps Lightning from warning
        self.log("val/acc", acc, prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)
        confusion = self.val_confusion.compute()
        if not self.trainer.sanity_checking:
            self.log_dict({"hp/val_acc": acc, "hp/val_f1": values["val/f1"],
                           "hp/val_auroc": values["val/auroc"]}, sync_dist=True)
            self._log_figures(confusion)
        self.val_metrics.reset()
        self.val_confusion.reset()
        self._val_outputs.clear()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def on_fit_start(self) -> None:
        # The hparams tab shows these metrics beside every hyperparameter of the run (model and data).
        if isinstance(self.logger, TensorBoardLogger):
            params = dict(self.hparams)
            if self.trainer.datamodule is not None:
                params.update({f"data.{k}": v for k, v in self.trainer.datamodule.hparams.items()})
            self.logger.log_hyperparams(params, {"hp/val_acc": 0.0, "hp/val_f1": 0.0, "hp/val_auroc": 0.0})

    def _log_figures(self, confusion: torch.Tensor) -> None:
        if not isinstance(self.logger, TensorBoardLogger) or not self.trainer.is_global_zero:
            return
        writer = self.logger.experiment
        step = self.global_step
        writer.add_image("val/confusion_matrix", confusion_image(confusion.cpu().numpy()), step, dataformats="HWC")
        if self._val_outputs:
            probs = torch.cat([p for p, _ in self._val_outputs])
            labels = torch.cat([t for _, t in self._val_outputs])
            writer.add_pr_curve("val/pr_curve", labels, probs, step)

    # --- optimizer -----------------------------------------------------------------------------------

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        # Lightning 2.6 refuses to clip for a fused optimizer under any mixed precision, though only a float16
        # gradient scaler conflicts with it (Lightning-AI/pytorch-lightning#21435); without a scaler the
        # gradients are unscaled and clipping them here is exact.
        if gradient_clip_val and getattr(optimizer, "defaults", {}).get("fused"):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_callbacks(self) -> list[L.Callback]:
        # `train/lr` (the scheduler's name below), written at the Trainer's logging steps only. Lightning asks at
        # every stage and keeps what it gets: a second monitor at `test` would replace the first, with a warning.
        trainer = self._trainer
        if trainer is None or not trainer.loggers or trainer.state.fn != "fit" or any(
                isinstance(c, LearningRateMonitor) for c in trainer.callbacks):
            return []
        return [LearningRateMonitor(logging_interval="step")]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        # fused: one pass over the parameters, 6x faster steps on CPU; a float16 gradient scaler needs the plain one
        fused = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None) is None
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)
        if hp.lr_schedule == "constant":  # a scheduler all the same: it names the logged `train/lr`
            scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        elif hp.lr_schedule == "onecycle":
            total = max(1, int(self.trainer.estimated_stepping_batches))
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=total,
                                                            pct_start=max(hp.warmup_ratio, 1e-3))
        else:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            warmup = int(total * hp.warmup_ratio)

            def cosine(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}

    # --- the text encoder travels with the weights -----------------------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage != "predict" and datamodule is not None and hasattr(datamodule, "text_encoder"):
            encoder = datamodule.text_encoder
            if len(encoder.vocab) != self.hparams.vocab_size:
                raise DataError(f"the data's vocabulary has {len(encoder.vocab)} tokens but the model was built "
                                f"for {self.hparams.vocab_size}; use the data settings the model was trained with")
            self.text_encoder = encoder

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.text_encoder is not None:
            checkpoint[ENCODER_KEY] = self.text_encoder.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if ENCODER_KEY not in checkpoint:
            return
        saved = TextEncoder.from_dict(checkpoint[ENCODER_KEY])
        if self.text_encoder is not None and self.text_encoder.vocab != saved.vocab:
            raise DataError("the checkpoint's vocabulary differs from the data module's: evaluate with the "
                            "data settings (max_size, min_freq, max_length, training data) used for training")
        self.text_encoder = saved

    # --- predictions: the Predictor's, over this module's network and text encoder ------------------------

    def predictor(self, **options: Any) -> Predictor:
        """This model as a ``Predictor`` (``options``: its ``bfloat16``, ``batch_size``)."""
        if self.text_encoder is None:
            raise DataError("this model has no vocabulary: load it from a checkpoint written by `sentiment fit`, "
                            "or train it with a SentimentDataModule")
        return Predictor(self.net, self.text_encoder, **options)

    def on_predict_start(self) -> None:
        # the Trainer's precision; the predictor's worker threads set it themselves (autocast is per thread)
        self._predicting = self.predictor(bfloat16=self.trainer.precision.startswith("bf16"))
        self.net.keep_inference_casts()  # the weights stay fixed while predicting

    def on_predict_end(self) -> None:
        self.net.keep_inference_casts(False)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Answers for a batch of raw ``text`` (or of ``input_ids`` and ``lengths``), in the Trainer's precision,
        with the batch's row ``index`` and ``id``."""
        predictor = self._predicting
        if "input_ids" in batch:
            answers = predictor.answers(predictor.probabilities(batch["input_ids"], batch["lengths"]).float())
        else:  # raw text, read in the predictor's batches on its worker threads
            answers = predictor.predict(batch["text"])
        return {"index": batch.get("index"), "id": batch.get("id"), "answers": answers}

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # A predict batch's raw texts stay where they are: Lightning would visit every string to move it
        if isinstance(batch, dict) and "text" in batch:
            return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def predict(self, texts: str | Sequence[str], batch_size: int = 256) -> list[dict[str, Any]]:
        """Classify raw reviews: ``[{"label": "positive", "score": 0.97}, ...]``, in input order
        (``Predictor.predict``; the model's train/eval mode is restored after)."""
        return self.predictor(batch_size=batch_size).predict(texts)

    def explain(self, text: str) -> dict[str, Any]:
        """How much each word read weighed in the answer (``Predictor.explain``)."""
        return self.predictor().explain(text)


def confusion_image(matrix: np.ndarray, cell: int = 120) -> np.ndarray:
    """A 2 x 2 confusion matrix as an RGB picture: rows true neg/pos, columns predicted neg/pos."""
    from PIL import Image, ImageDraw

    margin = 90
    size = margin + 2 * cell
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    total = max(1, int(matrix.sum()))
    row_totals = matrix.sum(axis=1).clip(min=1)
    for r in range(2):
        for c in range(2):
            share = matrix[r, c] / row_totals[r]
            shade = int(255 - 180 * share)
            x0, y0 = margin + c * cell, margin + r * cell
            draw.rectangle([x0, y0, x0 + cell - 2, y0 + cell - 2], fill=(shade, shade, 255))
            text = f"{int(matrix[r, c])}\n{100 * matrix[r, c] / total:.1f}%"
            draw.multiline_text((x0 + cell // 2, y0 + cell // 2), text, fill="black" if share < 0.6 else "white",
                                anchor="mm", align="center")
    for i, name in enumerate(("neg", "pos")):
        draw.text((margin + i * cell + cell // 2, margin - 15), name, fill="black", anchor="mm")
        draw.text((margin - 25, margin + i * cell + cell // 2), name, fill="black", anchor="mm")
    draw.text((margin + cell, 20), "predicted", fill="black", anchor="mm")
    draw.text((20, margin + cell), "true", fill="black", anchor="mm")
    return np.asarray(img)
