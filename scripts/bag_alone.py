#!/usr/bin/env python
"""The bag of n-grams alone: the hybrid's linear part trained by itself, for the ablation in BENCHMARKS.md.

    python scripts/bag_alone.py --config configs/imdb.yaml --data.data_dir data --seed_everything 7
    python scripts/bag_alone.py --config configs/imdb_semi.yaml --data.data_dir data    # self-training too

Takes `sentiment fit`'s own arguments: the data module, the model and the Trainer's epochs are built as that
command builds them (`build_cli(..., run=False)`), and the bag (``net.linear_bag``, with a bias of its own) trains
on the same batches with the same optimizer, learning rate, schedule and weight decay as the bag's parameter
group in the hybrid. Prints the validation accuracy after each epoch.

With ``--self_training true`` (as in ``configs/imdb_semi.yaml``) the bag is its own teacher, as the hybrid is in
``sentiment fit``: the bag trained alone labels IMDb's unlabelled reviews (through a checkpoint of the hybrid's
network whose recurrent part says nothing), and a new bag trains on the labelled reviews and those it is sure of.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import seed_everything

from sentiment.inference.checkpoint import add_inference_state, write_checkpoint
from sentiment.cli import build_cli
from sentiment.network.model import classification_loss
from sentiment.inference.predictor import Predictor
from sentiment.training.selftrain import model_settings


def train_bag(model, dm, epochs: int) -> torch.nn.Parameter:
    """Train ``model.net.linear_bag`` alone on ``dm``'s training split; returns the bias it learnt beside it."""
    hp, bag = model.hparams, model.net.linear_bag
    dm.setup("fit")
    with torch.no_grad():
        bag.scale.copy_(torch.from_numpy(dm.bag_ratios))
    bias = torch.nn.Parameter(torch.zeros(bag.weight.embedding_dim))
    lr = hp.lr if hp.bag_lr is None else hp.bag_lr
    optimizer = torch.optim.AdamW([{"params": bag.weight.parameters(), "weight_decay": hp.bag_weight_decay},
                                   {"params": [bias], "weight_decay": 0.0}], lr=lr)
    loader = dm.train_dataloader()
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader),
                                                   pct_start=hp.warmup_ratio)

    def logits(batch):
        out = bag(batch["bag_ids"]) + bias
        return out.squeeze(-1) if out.size(-1) == 1 else out

    start = time.perf_counter()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        bag.train()
        for batch in loader:
            loss = classification_loss(logits(batch), batch["labels"], hp.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        bag.eval()
        right = seen = 0
        with torch.no_grad():
            for batch in dm.val_dataloader():
                out = logits(batch)
                predicted = (out > 0).long() if out.dim() == 1 else out.argmax(1)
                right += int((predicted == batch["labels"]).sum())
                seen += len(predicted)
        print(f"epoch {epoch + 1}: val/acc {100 * right / seen:.2f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return bias


def bag_checkpoint(model, dm, bias: torch.Tensor, path: Path) -> Path:
    """A checkpoint of ``model``'s network that answers as its bag alone: the recurrent part's output layer
    zeroed, its bias the bag's."""
    with torch.no_grad():
        model.net.head.weight.zero_()
        model.net.head.bias.copy_(bias)
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": model_settings(model)}
    write_checkpoint(add_inference_state(checkpoint, dm.text_encoder, temperature=1.0), path)
    return path


def main(argv: list[str]) -> None:
    cli = build_cli([*argv, "--data.unlabelled.per_batch", "0"], run=False)  # the bag learns from labelled batches
    model, dm, config = cli.model, cli.datamodule, cli.config
    if model.net.linear_bag is None:
        raise SystemExit("the recipe has no bag: set --data.encoding.bag_ngrams")
    seed_everything(config.seed_everything, workers=True)
    bias = train_bag(model, dm, config.trainer.max_epochs)
    if not config.self_training:
        return
    with tempfile.TemporaryDirectory() as tmp:
        teacher = bag_checkpoint(model, dm, bias.detach(), Path(tmp) / "bag.ckpt")
        print("self-training: the bag alone labels the unlabelled reviews; a new bag learns from them", flush=True)
        student_data = dm.with_settings(unlabelled={"pseudo_labels": str(teacher)},
                                        labeller=Predictor.from_checkpoint(teacher))
        student_data.prepare_data()
        seed_everything(config.seed_everything, workers=True)
        student = type(model)(**model_settings(model))
        train_bag(student, student_data, config.trainer.max_epochs)


if __name__ == "__main__":
    main(sys.argv[1:])
