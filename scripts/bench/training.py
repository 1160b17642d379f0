"""Training throughput in plain PyTorch loops: the default recipe's step against the original project's."""

from __future__ import annotations

import json
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from bench.common import CONFIGS, ROOT, Report, Timed, in_turns
from sentiment.cli import SentimentCLI, default_precision
from sentiment.data.batches import EncodedReviews, as_batch
from sentiment.network.model import SentimentNet, adversarial_losses, classification_loss
from sentiment.training.selftrain import model_settings

PRECISION = default_precision()  # what `sentiment fit` uses on this machine
ORIGINAL = yaml.safe_load((CONFIGS / "seed.yaml").read_text())  # the original project's recipe


class PlainLoop(Timed):
    """A hand-written training loop, run a few steps at a time so that loops can be timed in turns.

    ``adam``: plain Adam, as the original project trained; otherwise fused AdamW, as SentimentClassifier does.
    ``adversarial``: train on the clean and the adversarial loss (``adversarial_losses``) on one step in
    ``adversarial_every``, as the recipe does.
    """

    def __init__(self, net: torch.nn.Module, dataset: EncodedReviews, batch_size: int, lr: float,
                 adam: bool = False, precision: str = "32-true", adversarial: float = 0.0,
                 adversarial_every: int = 1) -> None:
        self.net, self.precision, self.adversarial = net.train(), precision, adversarial
        self.adversarial_every, self.steps = adversarial_every, 0
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=as_batch)
        self.batches = iter(self.loader)
        if adam:
            self.optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        else:
            self.optimizer = torch.optim.AdamW(net.parameters(), lr=lr, fused=True)

    def run(self, steps: int, timed: bool = True) -> None:
        start, seen = time.perf_counter(), 0
        for _ in range(steps):
            batch = next(self.batches, None)
            if batch is None:
                self.batches = iter(self.loader)
                batch = next(self.batches)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16-mixed"):
                if self.adversarial and self.steps % self.adversarial_every == 0:
                    loss, adversarial_loss, _ = adversarial_losses(self.net, batch["input_ids"], batch["lengths"],
                                                                   batch["labels"], self.adversarial,
                                                                   bag_ids=batch.get("bag_ids"))
                    loss = loss + adversarial_loss
                else:  # the loss in float32 under autocast too, as in SentimentClassifier
                    logits = self.net(*(batch[k] for k in ("input_ids", "lengths", "bag_ids") if k in batch))
                    loss = classification_loss(logits.float(), batch["labels"])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.steps += 1
            seen += len(batch["labels"])
        if timed:
            self.seen, self.seconds = self.seen + seen, self.seconds + time.perf_counter() - start


def recipe_net(cli: SentimentCLI) -> SentimentNet:
    """A fresh network of the recipe (seeded weights), built by the recipe's own classifier."""
    torch.manual_seed(0)
    return type(cli.model)(**settings(cli)).net


def settings(cli: SentimentCLI, **changes) -> dict:
    """The recipe's model settings (without the CLI's own ``_instantiator`` entry), with ``changes``."""
    return {**model_settings(cli.model), **changes}


def recipe_loop(cli: SentimentCLI, precision: str = PRECISION, adversarial: float | None = None) -> PlainLoop:
    """The recipe's network in a plain loop with its batch size and learning rate; adversarial training as the
    recipe sets it unless ``adversarial`` says otherwise."""
    hp = cli.model.hparams
    return PlainLoop(recipe_net(cli), cli.datamodule.dataset("train"), cli.datamodule.loader.batch_size, hp.lr,
                     precision=precision, adversarial=hp.adversarial if adversarial is None else adversarial,
                     adversarial_every=hp.adversarial_every)


class OriginalNet(torch.nn.Module):
    """The original learning project's model: Embedding -> LSTM -> output at the last padded step -> Dropout ->
    Linear, on batches always padded to ``max_length`` tokens."""

    def __init__(self, vocab_size: int, model: dict = ORIGINAL["model"]["net"]) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab_size, model["embed_dim"])
        self.lstm = torch.nn.LSTM(model["embed_dim"], model["hidden_dim"], batch_first=True)
        self.dropout = torch.nn.Dropout(model["dropout"])
        self.fc = torch.nn.Linear(model["hidden_dim"], 1)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(input_ids))
        return self.fc(self.dropout(out[:, -1])).squeeze(-1)


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def original_encode(texts: list[str], max_length: int = ORIGINAL["data"]["encoding"]["max_length"]
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """The original project's text pipeline: lower-case, delete punctuation, ``str.split()``; every word of
    the training reviews in its ``word2idx`` (id 0 is padding); the first ``max_length`` words.

    On the IMDb training split this vocabulary has 121,364 words, the "121k x 128 embedding" of the original.
    """
    word2idx: dict[str, int] = {}
    rows = [[word2idx.setdefault(w, len(word2idx) + 1) for w in t.lower().translate(_PUNCTUATION).split()]
            for t in texts]
    ids = np.zeros((len(rows), max_length), dtype=np.int32)
    lengths = np.zeros(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        row = row[:max_length]
        ids[i, : len(row)] = row
        lengths[i] = max(1, len(row))
    return ids, lengths, len(word2idx) + 1


class _FullWidth(EncodedReviews):
    """Batches always ``max_length`` wide, as the original project padded them."""

    def __getitems__(self, indices):
        batch = super().__getitems__(indices)
        ids = torch.zeros(len(indices), self.ids.shape[1], dtype=torch.long)
        ids[:, : batch["input_ids"].shape[1]] = batch["input_ids"]
        return {**batch, "input_ids": ids}


def original_loop(data_file: Path) -> PlainLoop:
    """The original recipe's training loop on the data ``bench_train`` saved for it."""
    data = np.load(data_file)
    torch.manual_seed(0)
    return PlainLoop(OriginalNet(int(data["vocab_size"])), _FullWidth(data["ids"], data["lengths"], data["labels"]),
                     ORIGINAL["data"]["loader"]["batch_size"], ORIGINAL["model"]["lr"], adam=True)


class OriginalProcess(Timed):
    """The original recipe's loop in a process of its own, set up as the original project ran: glibc's default
    malloc settings and no denormal flush (``configure_cpu`` is process-wide, and this process has applied
    it). Driven over a pipe a few steps at a time, so it takes its turns beside the loops in this process."""

    def __init__(self, data_file: Path) -> None:
        self.child = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--original-loop",
                                       str(data_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, steps: int, timed: bool = True) -> None:
        self.child.stdin.write(f"{steps}\n")
        self.child.stdin.flush()
        reply = self.child.stdout.readline()
        if not reply:
            raise RuntimeError(f"the original recipe's process ended (exit code {self.child.wait()})")
        seen, seconds = json.loads(reply)
        if timed:
            self.seen, self.seconds = self.seen + seen, self.seconds + seconds

    def close(self) -> None:
        self.child.stdin.close()
        self.child.wait(timeout=60)


def original_loop_worker(data_file: Path) -> None:
    """The child side of ``OriginalProcess``: run the steps asked for on stdin, answer ``[seen, seconds]``."""
    loop = original_loop(data_file)
    for line in sys.stdin:
        seen, seconds = loop.seen, loop.seconds
        loop.run(int(line))
        print(json.dumps([loop.seen - seen, loop.seconds - seconds]), flush=True)


def bench_train(texts: list[str], labels: np.ndarray, cli: SentimentCLI, report: Report, steps: int) -> None:
    adversarial = cli.model.hparams.adversarial
    recipe, plain = recipe_loop(cli), recipe_loop(cli, adversarial=0.0)
    ids, lengths, original_vocab = original_encode(texts)
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "original.npz"
        np.savez(data_file, ids=ids, lengths=lengths, labels=labels, vocab_size=original_vocab)
        seed, as_it_ran = original_loop(data_file), OriginalProcess(data_file)
        runners = [recipe, plain, seed, as_it_ran]
        if PRECISION != "32-true":
            full = recipe_loop(cli, precision="32-true", adversarial=0.0)
            runners.append(full)
        try:
            in_turns(runners, steps)
        finally:
            as_it_ran.close()
    report.add(f"training throughput, default recipe (plain loop, {PRECISION}, adversarial training "
               f"{adversarial:g} on one step in {cli.model.hparams.adversarial_every}); the original recipe: "
               f"vocabulary {original_vocab - 1:,} words, batch {ORIGINAL['data']['loader']['batch_size']}, Adam, "
               "32-true",
               f"{recipe.throughput:,.0f} reviews/s", ">= 3x")
    report.add("  the default model's plain step (no adversarial pass)", f"{plain.throughput:,.0f} reviews/s", "",
               f"{plain.throughput / recipe.throughput:.2f}x the recipe's step")
    if PRECISION != "32-true":
        report.add("  the same in 32-true", f"{full.throughput:,.0f} reviews/s", "",
                   f"{plain.throughput / full.throughput:.2f}x in {PRECISION}")
    for name, reference in (("as it ran (its own process: glibc's malloc defaults, no denormal flush)", as_it_ran),
                            ("with `configure_cpu()`, in this process", seed)):
        report.add(f"  vs the original recipe {name}", f"{reference.throughput:,.0f} reviews/s", ">= 3x",
                   f"recipe {recipe.throughput / reference.throughput:.1f}x, "
                   f"plain step {plain.throughput / reference.throughput:.1f}x")
