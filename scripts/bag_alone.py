#!/usr/bin/env python
"""The bag of n-grams alone: the hybrid's linear part trained by itself, for the ablation in BENCHMARKS.md.

    python scripts/bag_alone.py --config configs/imdb.yaml --data.data_dir data --seed_everything 7

Takes `sentiment fit`'s own arguments: the data module, the model and the Trainer's epochs are built as that
command builds them (`build_cli(..., run=False)`), and the bag (``net.linear_bag``, with a bias of its own) trains
on the same batches with the same optimizer, learning rate, schedule and weight decay as the bag's parameter
group in the hybrid. Prints the validation accuracy after each epoch.
"""

from __future__ import annotations

import sys
import time

import torch
from lightning.pytorch import seed_everything

from sentiment.cli import build_cli
from sentiment.model import classification_loss


def main(argv: list[str]) -> None:
    cli = build_cli(argv, run=False)
    model, dm, hp = cli.model, cli.datamodule, cli.model.hparams
    bag = model.net.linear_bag
    if bag is None:
        raise SystemExit("the recipe has no bag: set --data.bag_ngrams")
    seed_everything(cli.config.seed_everything, workers=True)
    dm.setup("fit")
    with torch.no_grad():
        bag.scale.copy_(torch.from_numpy(dm.bag_ratios))
    bias = torch.nn.Parameter(torch.zeros(bag.weight.embedding_dim))
    lr = hp.lr if hp.bag_lr is None else hp.bag_lr
    optimizer = torch.optim.AdamW([{"params": bag.weight.parameters(), "weight_decay": hp.bag_weight_decay},
                                   {"params": [bias], "weight_decay": 0.0}], lr=lr)
    epochs = cli.config.trainer.max_epochs
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


if __name__ == "__main__":
    main(sys.argv[1:])
