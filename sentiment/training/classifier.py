"""``SentimentClassifier``: the LightningModule that trains, evaluates and serves ``SentimentNet``.

It owns the loss, the metrics and their logging, one shared step for train/val/test, ``predict_step`` and
the optimizer. It also carries the text encoder (tokenizer settings and vocabulary) inside its
checkpoints, so a trained model reads raw reviews with no data module present.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryConfusionMatrix, MulticlassConfusionMatrix

from sentiment.training.calibration import best_thresholds, calibrate, expected_calibration_error
from sentiment.training.metrics import HEADLINE, HPARAM_METRICS, task_metrics, training_metric
from sentiment.training.schedules import OneCycle
from sentiment.inference.checkpoint import (ENCODER_KEY, add_inference_state, load_temperature, load_text_encoder,
                                            load_thresholds)
from sentiment import cpu
from sentiment.errors import DataError
from sentiment.data.labels import BINARY, numeric_values
from sentiment.network.model import (NetConfig, SentimentNet, adversarial_losses, classification_loss, entropy,
                                     probabilities, virtual_adversarial_loss)
from sentiment.inference.predictor import Predictor
from sentiment.data.text import TextEncoder, Vocab

LrSchedule = Literal["constant", "onecycle", "cosine"]
ClassWeights = Literal["none", "balanced"]


class SentimentClassifier(L.LightningModule):
    """The model: a sentiment classifier over token ids for any label set, trained with its loss and metrics.

    It logs accuracy, F1, precision, recall, AUROC and the calibration error (and, for numeric labels such as star
    ratings, the mean absolute error); with several labels per text (``multi_label``), macro and micro F1 (each
    label's too), example-based Jaccard, subset accuracy and Hamming loss, at each label's threshold, chosen for F1
    on the validation split while fitting and kept in checkpoints.

    The defaults are the recipe we recommend (``configs/imdb.yaml``): ``SentimentClassifier(vocab_size=...)``
    is the good model. The network's settings are one ``NetConfig`` (``net={"hidden_dim": 128}``;
    ``--model.net.hidden_dim 128`` on the command line).

    Args:
        vocab_size: number of token ids (linked from the data module by the CLI; read from the
            checkpoint when predicting).
        classes: the label set, in order (linked from the data module by the CLI: ``dm.label_names``;
            default: negative, positive); two classes train one logit with a sigmoid, more a logit per class
            with a softmax.
        multi_label: the classes are labels a text may have any number of (linked from the data module by the CLI:
            ``dm.multi_label``): a logit per label, each read with its own sigmoid, trained with binary
            cross-entropy.
        bag_size: n-grams in the data's bag of n-grams (linked from the data module by the CLI: ``dm.bag_size``);
            0: no bag.
        net: the network's settings (``NetConfig``: ``--model.net.hidden_dim``, ...; a dict of the settings that
            differ from the defaults will do).
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        lr_schedule: ``constant``, ``onecycle`` (warm up, then anneal) or ``cosine`` (warm up, then cosine decay).
        warmup_ratio: share of the training steps spent warming up (``onecycle`` and ``cosine``).
        label_smoothing: pull the training targets this far towards the uniform distribution.
        class_weights: ``balanced``: weigh each training review's loss by the inverse of its class's frequency
            (for imbalanced data; with ``multi_label``, each label's positive texts by the square root of its
            negatives over its positives); ``none``: every review alike.
        adversarial: adversarial training: the norm of the shift of each review's embeddings along the loss
            gradient, trained on beside the clean input (0: off; about twice the training time).
        adversarial_every: take the adversarial loss on one training step in this many (1: every step); the
            others train on the clean loss alone, at half the cost.
        vat: virtual adversarial training on the unlabelled texts the data module serves beside each batch (its
            ``unlabelled.per_batch``; without them the labelled loss alone trains): the norm of the shift of each
            text's embeddings that moves the prediction most; the divergence it causes is trained away beside the
            labelled loss (0: off; a step taking it reads its unlabelled batch three times).
        entropy: entropy minimisation on those unlabelled texts: the weight of the prediction's entropy on them
            (0: off).
        unlabelled_every: take the losses on unlabelled reviews (``vat``, ``entropy``) on one training step in this
            many (1: every step), on the steps the adversarial loss skips when both are every other step.
        bag_lr: peak learning rate of the bag of n-grams' weights (``bag_size`` > 0); None: ``lr``.
        bag_weight_decay: AdamW weight decay of the bag's weights, its own regularisation, so that it does not
            drown the recurrent part.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        classes: list[str] | None = None,
        multi_label: bool = False,
        bag_size: int = 0,
        net: NetConfig = NetConfig(),  # frozen: one shared default is safe, and LightningCLI shows its fields
        lr: float = 4e-3,
        weight_decay: float = 0.01,
        lr_schedule: LrSchedule = "onecycle",
        warmup_ratio: float = 0.1,
        label_smoothing: float = 0.0,
        class_weights: ClassWeights = "none",
        adversarial: float = 2.0,  # gains more than a wider or longer model for the same time (BENCHMARKS.md)
        adversarial_every: int = 2,  # every other step: the same accuracy at two thirds of the time (BENCHMARKS.md)
        vat: float = 0.0,  # beside entropy minimisation, +0.04 for a quarter more time (BENCHMARKS.md); try 2.0
        entropy: float = 0.5,  # with unlabelled batches: +0.25 on IMDb, higher on five seeds of five, 1.2x the time
        unlabelled_every: int = 2,  # the same gain as every step for less time (BENCHMARKS.md)
        bag_lr: float | None = None,
        bag_weight_decay: float = 0.0,
    ) -> None:
        given = {k: v for k, v in locals().items() if k != "self" and not k.startswith("__")}  # the arguments, once
        super().__init__()
        if vocab_size is None:
            raise ValueError("vocab_size is required: the CLI links it from the data module when fitting, "
                             "and reads it from the checkpoint (--ckpt_path) otherwise")
        for name, every in (("adversarial_every", adversarial_every), ("unlabelled_every", unlabelled_every)):
            if every < 1:
                raise ValueError(f"{name} must be 1 or more, got {every}")
        self.labels = tuple(classes) if classes else BINARY
        self.multi_label = multi_label
        config = NetConfig.of(net)
        # plain data, so that checkpoints load with weights_only: the label set as strings, and every network
        # setting, defaults included (a checkpoint rebuilds its network whatever the defaults become); nothing of
        # LightningCLI's own (its `_instantiator`): the arguments rebuild the model as they are
        self.save_hyperparameters({**given, "classes": list(self.labels), "net": dataclasses.asdict(config)})
        # the vocabulary's padding and unknown-word ids are fixed (Vocab): no setting could change them
        self.net = SentimentNet(vocab_size, config, num_classes=len(self.labels), bag_size=bag_size,
                                pad_id=Vocab.pad_id, unk_id=Vocab.unk_id, multi_label=multi_label)
        self.text_encoder: TextEncoder | None = None
        # fitted on validation (sentiment.training.calibration), travelling in checkpoints: the temperature of a
        # text's one label, or each label's threshold (its probability from which a text has it)
        self.temperature = 1.0
        self.thresholds = torch.full((len(self.labels),), 0.5) if multi_label else None
        self.predict_options: dict[str, Any] = {}  # the Predictor's, for predict_step (`sentiment predict --top_k`)
        self.values = numeric_values(self.labels)  # star ratings and other numbers: their values, for `mae`
        k = len(self.labels)
        metrics = task_metrics(self.labels, multi_label, numeric=self.values is not None)
        self.train_key, self.train_acc = training_metric(self.labels, multi_label)
        self.headline = HEADLINE[multi_label]
        self.val_confusion = (None if multi_label else BinaryConfusionMatrix() if k == 2
                              else MulticlassConfusionMatrix(k))
        self.val_metrics = MetricCollection(metrics, prefix="val/", compute_groups=False)
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.register_buffer("class_weight", None, persistent=False)  # set in setup() when balanced

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, bag_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
        return self.net(input_ids, lengths, bag_ids)

    # --- train / val / test ----------------------------------------------------------------------------

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        labels = batch["labels"]
        train = stage == "train"
        smoothing = self.hparams.label_smoothing if train else 0.0
        weight = self.class_weight if train else None
        adversarial_loss = None
        if train and self.hparams.adversarial > 0 and self.global_step % self.hparams.adversarial_every == 0:
            loss, adversarial_loss, logits = self._adversarial_losses(batch, smoothing, weight)
        else:
            logits = self.net(batch["input_ids"], batch["lengths"], batch.get("bag_ids"))
            loss = classification_loss(logits, labels, smoothing, weight)
        self._account(stage, logits.detach(), labels, loss.detach(), adversarial_loss)
        if adversarial_loss is None:
            return loss
        # Training minimizes both losses, but the value Lightning reads (the progress bar, the learning-rate finder's
        # curve) is the clean loss, comparable from step to step: their sum on every other step alone made the
        # finder's curve jagged, and its suggestion far too small (BENCHMARKS.md). The gradient is the sum's.
        objective = loss + adversarial_loss
        return objective - objective.detach() + loss.detach()

    # Under torch.compile(model) this step runs as written: the gradient it takes for the shift is kept for the
    # backward pass after it, which PyTorch's compiled backward cannot do (it frees its buffers)
    @torch.compiler.disable
    def _adversarial_losses(self, batch: dict[str, torch.Tensor], smoothing: float, weight: torch.Tensor | None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return adversarial_losses(self.net, batch["input_ids"], batch["lengths"], batch["labels"],
                                  self.hparams.adversarial, smoothing, weight, batch.get("bag_ids"))

    @torch.compiler.disable  # metrics and logging run as written under torch.compile(model): only the network compiles
    def _account(self, stage: str, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor,
                 adversarial_loss: torch.Tensor | None) -> None:
        """A step's metrics and logs."""
        n = len(labels)
        if stage == "train":
            if adversarial_loss is not None:
                self.log("train/adversarial_loss", adversarial_loss.detach(), batch_size=n)
            # decisions, not probabilities: torchmetrics would check every probability is in [0, 1] each step
            self.train_acc.update(self._decisions(logits), labels)  # logged once, at the epoch end
            self.log("train/loss", loss, prog_bar=True, batch_size=n)
            return
        logits = logits.float()
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        if stage == "val":  # label sets are measured at the epoch's end, at the thresholds chosen on all of them
            self._val_outputs.append((logits.cpu(), labels.cpu()))
            if self.multi_label:
                return
            self.val_confusion.update(self._decisions(logits), labels)
        self._update(self.val_metrics if stage == "val" else self.test_metrics, logits, labels)

    def _update(self, metrics: MetricCollection, logits: torch.Tensor, labels: torch.Tensor) -> None:
        probs = probabilities(logits, self.multi_label)
        if self.multi_label:
            decided = (probs >= self.thresholds.to(probs.device)).long()
            for name, metric in metrics.items(keep_base=True):
                metric.update(probs if name.endswith("auroc") else decided, labels)
            return
        for name, metric in metrics.items(keep_base=True):
            if name.endswith("mae"):
                values = torch.as_tensor(self.values, dtype=torch.float32, device=labels.device)
                metric.update(values[probs.argmax(1)], values[labels])
            elif len(self.labels) == 2:
                metric.update(probs[:, 1], labels)
            else:
                metric.update(probs, labels)

    def _computed(self, metrics: MetricCollection) -> dict[str, torch.Tensor]:
        """The metrics as logged: a class's F1 under ``f1/<label>``."""
        values = metrics.compute()
        out = {}
        for key, value in values.items():
            if key.endswith("class_f1"):
                stage = key.split("/")[0]
                out.update({f"{stage}/f1/{label}": v for label, v in zip(self.labels, value)})
            else:
                out[key] = value
        return out

    def _decisions(self, logits: torch.Tensor) -> torch.Tensor:
        """Each review's class from either form of logits (one per review: > 0 is the second class); of label sets,
        each label whose probability is above 0.5."""
        return (logits > 0).long() if logits.dim() == 1 or self.multi_label else logits.argmax(dim=-1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # without unlabelled batches (your own data without unlabelled texts, a plain DataLoader), the labelled loss
        if "labelled" not in batch:
            return self._shared_step(batch, "train")
        loss = self._shared_step(batch["labelled"], "train")
        # offset by one step from the adversarial loss's schedule: every other step each, a step pays for one of them
        if not (self.hparams.vat or self.hparams.entropy) or (self.global_step + 1) % self.hparams.unlabelled_every:
            return loss
        unlabelled = self._unlabelled_losses(batch["unlabelled"])
        return loss + unlabelled - unlabelled.detach()  # their gradient; the value logged stays the labelled loss

    @torch.compiler.disable  # the gradient taken for the shift, as in _adversarial_losses
    def _unlabelled_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The losses on a batch of unlabelled reviews: virtual adversarial, and the predictions' entropy."""
        args = batch["input_ids"], batch["lengths"]
        total, n = torch.zeros((), device=args[0].device), len(args[1])
        if self.hparams.vat:
            vat, logits = virtual_adversarial_loss(self.net, *args, self.hparams.vat, batch.get("bag_ids"))
            self.log("train/vat_loss", vat.detach(), batch_size=n)
            total = total + vat
        else:
            logits = self.net(*args, batch.get("bag_ids"))
        if self.hparams.entropy:
            spread = entropy(logits, self.multi_label)
            self.log("train/entropy", spread.detach(), batch_size=n)
            total = total + self.hparams.entropy * spread
        return total

    def on_train_epoch_end(self) -> None:
        # Each self.log call costs Lightning about 0.6 ms, so the accuracy is logged once an epoch, not every step
        self.log(f"train/{self.train_key}", self.train_acc.compute(), prog_bar=True, sync_dist=True)
        self.train_acc.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        fitting = self.trainer.state.fn == "fit" and not self.trainer.sanity_checking
        outputs = self._val_outputs
        logits = torch.cat([x for x, _ in outputs]) if outputs else None
        labels = torch.cat([y for _, y in outputs]) if outputs else None
        if self.multi_label and outputs:
            if fitting:  # each label's threshold: the one of the best F1 on these texts
                self.thresholds = best_thresholds(probabilities(logits, True), labels)
            self._update(self.val_metrics, logits, labels)
        with warnings.catch_warnings():
            if self.trainer.sanity_checking:  # two batches may lack a rare label: that says nothing of the data
                warnings.filterwarnings("ignore", message=r".*No positive samples in targets")
            values = self._computed(self.val_metrics)
        headline = values.pop(f"val/{self.headline}")
        # compute() already gathers every process's reviews; sync_dist only keeps Lightning from warning
        self.log(f"val/{self.headline}", headline, prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)
        values[f"val/{self.headline}"] = headline
        confusion = self.val_confusion.compute() if self.val_confusion is not None else None
        if not self.trainer.sanity_checking and outputs:
            if not self.multi_label:
                if fitting:
                    # the temperature that makes these weights' probabilities honest on validation, kept if it
                    # helps; validating a trained model measures its calibration and changes nothing
                    self.temperature, _, error = calibrate(logits, labels)
                else:
                    error = expected_calibration_error(probabilities(logits / self.temperature), labels)
                self.log("val/ece", error, sync_dist=True)
            if fitting:  # the hparams tab's copies: of fitting runs only
                self.log_dict({f"hp/val_{name}": values[f"val/{name}"] for name in HPARAM_METRICS[self.multi_label]},
                              sync_dist=True)
            self._log_figures(confusion, probabilities(logits / self.temperature, self.multi_label), labels)
        self.val_metrics.reset()
        if self.val_confusion is not None:
            self.val_confusion.reset()
        self._val_outputs.clear()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._computed(self.test_metrics), sync_dist=True)
        self.test_metrics.reset()

    def setup(self, stage: str) -> None:
        if not isinstance(self.net, SentimentNet):  # torch.compile(model.net) wraps it, renaming every weight
            raise DataError(f"model.net is of type {type(self.net).__name__}, not the SentimentNet checkpoints and "
                            "predictors read: compile it in place (model.net.compile()) or compile the model "
                            "(torch.compile(model))")
        precision = self.trainer.precision
        if cpu.bfloat16_precision(precision) and not cpu.native_bfloat16():  # `sentiment` falls back to 32-true
            raise DataError(f"precision {precision}: {cpu.NO_BFLOAT16}; use precision='32-true'")
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage != "predict" and datamodule is not None and hasattr(datamodule, "text_encoder"):
            encoder = datamodule.text_encoder
            if len(encoder.vocab) != self.hparams.vocab_size:
                raise DataError(f"the data's vocabulary has {len(encoder.vocab)} tokens but the model was built "
                                f"for {self.hparams.vocab_size}; use the data settings the model was trained with")
            if list(datamodule.label_names) != list(self.labels):
                raise DataError(f"the data's labels are {', '.join(datamodule.label_names)} but the model was "
                                f"trained on {', '.join(self.labels)}")
            if getattr(datamodule, "multi_label", False) != self.multi_label:
                raise DataError(f"the model was trained on {'several labels' if self.multi_label else 'one label'} "
                                f"per text: set --data.encoding.multi_label {str(self.multi_label).lower()}")
            self.text_encoder = encoder
            bag_size = getattr(datamodule, "bag_size", 0)
            if self.net.linear_bag is not None and bag_size != self.hparams.bag_size:
                raise DataError(f"the data's bag has {bag_size} n-grams but the model was built for "
                                f"{self.hparams.bag_size}; use the data settings the model was trained with")
            ratios = getattr(datamodule, "bag_ratios", None) if stage == "fit" else None
            if ratios is not None and self.net.linear_bag is not None:  # a resumed run restores its own after this
                with torch.no_grad():
                    self.net.linear_bag.scale.copy_(torch.from_numpy(ratios))
            vectors = getattr(datamodule, "embedding_vectors", None) if stage == "fit" else None
            if vectors is not None:  # a run resumed from a checkpoint restores its own weights after this
                embedding = self.net.embedding.weight
                if vectors.shape != tuple(embedding.shape):
                    raise DataError(f"the word vectors have {vectors.shape[1]} dimensions but the model's embedding "
                                    f"{embedding.shape[1]}: set --data.unlabelled.word_vectors and "
                                    "--model.net.embed_dim alike")
                with torch.no_grad():
                    embedding.copy_(torch.from_numpy(vectors))
            if stage == "fit" and self.hparams.class_weights == "balanced":
                counts = torch.tensor(datamodule.class_counts, dtype=torch.float32)
                if self.multi_label:  # each label's positives against its negatives, softened (a rare label's
                    # ratio of hundreds would swamp the loss)
                    negatives = len(datamodule.dataset("train")) - counts
                    self.class_weight = (negatives / counts.clamp(min=1)).sqrt().to(self.device)
                else:
                    self.class_weight = (counts.sum() / (len(counts) * counts)).to(self.device)

    def on_fit_start(self) -> None:
        # The hparams tab shows these metrics beside every hyperparameter of the run (the model's and the data
        # module's, as Lightning logs them), from the first fit of a run only: a resumed run keeps the values the
        # metrics have, not placeholders.
        if isinstance(self.logger, TensorBoardLogger) and self.trainer.ckpt_path is None:
            params = dict(self.hparams)
            if self.trainer.datamodule is not None:
                params.update(self.trainer.datamodule.hparams)
            self.logger.log_hyperparams(params, {f"hp/val_{name}": 0.0 for name in HPARAM_METRICS[self.multi_label]})

    def _log_figures(self, confusion: torch.Tensor | None, probs: torch.Tensor, labels: torch.Tensor) -> None:
        if not isinstance(self.logger, TensorBoardLogger) or not self.trainer.is_global_zero:
            return
        import matplotlib

        matplotlib.use("Agg")  # no screen: draw into memory
        import matplotlib.pyplot as plt

        writer = self.logger.experiment
        step = self.global_step
        if self.multi_label:  # a precision-recall curve per label
            for k, label in enumerate(self.labels):
                writer.add_pr_curve(f"val/pr_curve/{label}", labels[:, k], probs[:, k], step)
            return
        size = 2 + 0.9 * len(self.labels)
        figure, axes = plt.subplots(figsize=(size + 0.5, size), layout="constrained")
        self.val_confusion.plot(confusion.cpu(), ax=axes, labels=list(self.labels))
        writer.add_figure("val/confusion_matrix", figure, step)
        plt.close(figure)
        if len(self.labels) == 2:
            writer.add_pr_curve("val/pr_curve", labels, probs[:, 1], step)
        else:
            for k, label in enumerate(self.labels):
                writer.add_pr_curve(f"val/pr_curve/{label}", labels == k, probs[:, k], step)

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
        groups = [{"params": [p for name, p in self.named_parameters() if not name.startswith("net.linear_bag.")],
                   "lr": hp.lr, "weight_decay": hp.weight_decay, "name": "lr"}]
        if self.net.linear_bag is not None:
            groups.append({"params": list(self.net.linear_bag.parameters()),
                           "lr": hp.lr if hp.bag_lr is None else hp.bag_lr, "weight_decay": hp.bag_weight_decay,
                           "name": "bag_lr"})
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)
        if hp.lr_schedule == "constant":  # a scheduler all the same: it names the logged `train/lr`
            scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        elif hp.lr_schedule == "onecycle":
            total = max(1, int(self.trainer.estimated_stepping_batches))
            # torch's OneCycleLR, but for the plan of this run: a resumed run with more epochs stretches it
            scheduler = OneCycle(optimizer, max_lr=[g["lr"] for g in groups], total_steps=total,
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
                # logged as train/lr (and train/bag_lr): the scheduler's name, then each group's
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train"}}

    # --- the text encoder travels with the weights -----------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        add_inference_state(checkpoint, self.text_encoder, self.temperature, self.thresholds)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.temperature = load_temperature(checkpoint)
        if self.multi_label:
            self.thresholds = load_thresholds(checkpoint, len(self.labels))
        if ENCODER_KEY not in checkpoint:  # saved without a data module: the data module's encoder serves
            return
        saved = load_text_encoder(checkpoint)
        if self.text_encoder is not None and self.text_encoder.vocab != saved.vocab:
            raise DataError("the checkpoint's vocabulary differs from the data module's: evaluate with the "
                            "data settings (max_size, min_freq, max_length, training data) used for training")
        self.text_encoder = saved

    # --- predictions: the Predictor's, over this module's network and text encoder ------------------------

    def predictor(self, **options: Any) -> Predictor:
        """This model as a ``Predictor`` (``options``: its ``compute``, ``batch_size``, ``threads``, ``threshold``,
        ``top_k``)."""
        if self.text_encoder is None:
            raise DataError("this model has no vocabulary: load it from a checkpoint written by `sentiment fit`, "
                            "or train it with a SentimentDataModule")
        return Predictor(self.net, self.text_encoder, labels=self.labels, temperature=self.temperature,
                         thresholds=self.thresholds, **options)

    def on_predict_start(self) -> None:
        # the Trainer's precision; the predictor's worker threads set it themselves (autocast is per thread)
        self._predicting = self.predictor(compute="bfloat16" if cpu.bfloat16_precision(self.trainer.precision)
                                          else "float32", **self.predict_options)
        self.net.keep_inference_casts()  # the weights stay fixed while predicting

    def on_predict_end(self) -> None:
        self.net.keep_inference_casts(False)

    def predict_step(self, batch: dict[str, Any] | Sequence[str], batch_idx: int, dataloader_idx: int = 0
                     ) -> dict[str, Any] | list[dict[str, Any]]:
        """Answers for a batch of raw ``text`` (or of ``input_ids`` and ``lengths``), in the Trainer's precision,
        with the batch's row ``index`` and ``id``; for a plain list of texts (``DataLoader(["great film", ...])``),
        the answers alone, in its order."""
        predictor = self._predicting
        if isinstance(batch, (list, tuple)) and all(isinstance(text, str) for text in batch):
            return predictor.predict(list(batch))
        if "input_ids" in batch:
            answers = predictor.answers(predictor.probabilities(batch["input_ids"], batch["lengths"],
                                                                batch.get("bag_ids")))
        else:  # raw text, read in the predictor's batches on its worker threads
            answers = predictor.predict(batch["text"])
        return {"index": batch.get("index"), "id": batch.get("id"), "answers": answers}

    def predict(self, texts: str | Sequence[str], batch_size: int = 256) -> list[dict[str, Any]]:
        """Classify raw reviews, in input order (``Predictor.predict``; the model's train/eval mode is restored
        after)."""
        return self.predictor(batch_size=batch_size).predict(texts)

    def explain(self, text: str) -> dict[str, Any]:
        """How much each word read weighed in the answer (``Predictor.explain``)."""
        return self.predictor().explain(text)

