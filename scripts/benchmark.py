#!/usr/bin/env python
"""Speed, measured side by side in one run, each figure as a ratio against its reference.

    python scripts/benchmark.py                   # full run on the IMDb training archive; updates BENCHMARKS.md
    python scripts/benchmark.py --quick           # a small, fast pass (used by the test suite); writes nothing
    python scripts/benchmark.py --only tokenize   # one section: tokenize, train, lightning, predict, cores, serve

No network: the reviews come from ../shared/data/aclImdb_train.tar.gz or --archive.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import http.client
import json
import os
import platform
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sentiment.classifier import SentimentClassifier  # noqa: E402
from sentiment.cli import cli_main, default_precision  # noqa: E402
from sentiment.cpu import configure_cpu  # noqa: E402
from sentiment.data import EncodedReviews, _as_batch  # noqa: E402
from sentiment.model import SentimentNet, adversarial_losses, binary_loss  # noqa: E402
from sentiment.sources import read_imdb  # noqa: E402
from sentiment.text import TextEncoder, encode_corpus  # noqa: E402

DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "aclImdb_train.tar.gz"
MARK_START, MARK_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
ALL_SECTIONS = ("tokenize", "train", "lightning", "predict", "cores", "serve")

NETWORK_KEYS = ("embed_dim", "hidden_dim", "cell", "num_layers", "bidirectional", "pooling", "dropout", "embed_dropout",
                "word_dropout")


def config_model(name: str) -> dict:
    """The model settings of ``configs/<name>``, so the rows time what the config trains."""
    return yaml.safe_load((ROOT / "configs" / name).read_text())["model"]


def network(model: dict) -> dict:
    return {key: model[key] for key in NETWORK_KEYS}


DEFAULT_RECIPE = config_model("imdb.yaml")
DEFAULT_MODEL = network(DEFAULT_RECIPE)
DEFAULT_ADVERSARIAL = DEFAULT_RECIPE.get("adversarial", 0.0)  # the recipe's training step
FAST_MODEL = network(config_model("imdb_fast.yaml"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"lightning {L.__version__}, {torch.get_num_threads()} torch threads")


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


# --- 1. tokenization + vocabulary + encoding ------------------------------------------------------------


def hf_tokenizers_pipeline(texts: list[str]) -> np.ndarray:
    """Hugging Face `tokenizers` doing the same job: lower-case and strip tags, WordLevel vocabulary of
    30,000 (min count 2) trained on the texts, Whitespace pre-tokenizer, encode_batch truncating and
    padding to 128."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex("<[^<>]*>"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=30000, min_frequency=2,
                                                             special_tokens=["<pad>", "<unk>"]))
    tok.enable_truncation(128)
    tok.enable_padding(pad_id=0, pad_token="<pad>", length=128)
    return np.array([e.ids for e in tok.encode_batch(texts)], dtype=np.int32)


def bench_tokenize(texts: list[str], rows: list, repeat: int) -> None:
    ours, _ = timed(lambda: encode_corpus(texts, min_freq=2, max_size=30000, max_length=128), repeat)
    one, _ = timed(lambda: encode_corpus(texts, min_freq=2, max_size=30000, max_length=128, num_proc=1), repeat)
    rows.append((f"tokenize + vocabulary + encode {len(texts):,} reviews", f"{ours:.2f} s (1 process: {one:.2f} s)",
                 "<= 2 s", ""))
    try:
        theirs, _ = timed(lambda: hf_tokenizers_pipeline(texts), repeat)
    except ImportError:
        rows.append(("  vs Hugging Face tokenizers", "not installed (pip install tokenizers)", ">= 1.5x", ""))
        return
    rows.append(("  vs Hugging Face `tokenizers` (WordLevel, same job)", f"{theirs:.2f} s", ">= 1.5x",
                 f"{theirs / ours:.1f}x faster"))


# --- 2. training throughput, plain PyTorch loops ---------------------------------------------------------


PRECISION = default_precision()  # what `sentiment fit` uses on this machine


class _Timed:
    """What a runner has timed so far: reviews trained on and seconds taken."""

    seen, seconds = 0, 0.0

    @property
    def throughput(self) -> float:
        return self.seen / self.seconds


class PlainLoop(_Timed):
    """A hand-written training loop, run a few steps at a time so that loops can be timed in turns.

    ``adam``: plain Adam, as the original project trained; otherwise fused AdamW, as SentimentClassifier does.
    ``adversarial``: train on the clean and the adversarial loss (``adversarial_losses``), as the recipe does.
    """

    def __init__(self, net: torch.nn.Module, dataset: EncodedReviews, batch_size: int, lr: float,
                 adam: bool = False, precision: str = "32-true", adversarial: float = 0.0) -> None:
        self.net, self.precision, self.adversarial = net.train(), precision, adversarial
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=_as_batch)
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
                if self.adversarial:
                    loss, adversarial_loss, _ = adversarial_losses(self.net, batch["input_ids"], batch["lengths"],
                                                                   batch["labels"], self.adversarial)
                    loss = loss + adversarial_loss
                else:  # the loss in float32 under autocast too, as in SentimentClassifier
                    loss = binary_loss(self.net(batch["input_ids"], batch["lengths"]).float(), batch["labels"])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            seen += len(batch["labels"])
        if timed:
            self.seen, self.seconds = self.seen + seen, self.seconds + time.perf_counter() - start


def default_loop(vocab_size: int, data: EncodedReviews, precision: str = PRECISION,
                 adversarial: float = 0.0) -> PlainLoop:
    """The default model (seeded weights) in a plain loop with the recipe's batch size and learning rate."""
    torch.manual_seed(0)
    return PlainLoop(SentimentNet(vocab_size, **DEFAULT_MODEL), data, 64, 4e-3, precision=precision,
                     adversarial=adversarial)


WARMUP_STEPS = 5


def in_turns(runners: list, steps: int, rounds: int = 5) -> None:
    """Warm every runner up, then time ``steps`` steps of each, in ``rounds`` turns: a machine whose speed
    drifts (a shared host) then slows every side alike, and the ratios stay honest."""
    for runner in runners:
        runner.run(WARMUP_STEPS, timed=False)
    for r in range(rounds):
        for runner in runners:
            runner.run(steps // rounds + (r < steps % rounds))


def encode_for(texts, labels, **settings) -> tuple[EncodedReviews, int]:
    vocab, ids, lengths = encode_corpus(texts, **settings)
    return EncodedReviews(ids, lengths, labels), len(vocab)


class OriginalNet(torch.nn.Module):
    """The original learning project's model: Embedding(128) -> LSTM(64) -> output at step 128 ->
    Dropout(0.5) -> Linear, on batches always padded to 128 tokens."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab_size, 128)
        self.lstm = torch.nn.LSTM(128, 64, batch_first=True)
        self.dropout = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(64, 1)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(input_ids))
        return self.fc(self.dropout(out[:, -1])).squeeze(-1)


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def original_encode(texts: list[str], max_length: int = 128) -> tuple[np.ndarray, np.ndarray, int]:
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
    """Batches always 128 wide, as the original project padded them."""

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
                     50, 1e-3, adam=True)


class OriginalProcess(_Timed):
    """The original recipe's loop in a process of its own, set up as the original project ran: glibc's default
    malloc settings and no denormal flush (``configure_cpu`` is process-wide, and this process has applied
    it). Driven over a pipe a few steps at a time, so it takes its turns beside the loops in this process."""

    def __init__(self, data_file: Path) -> None:
        self.child = subprocess.Popen([sys.executable, __file__, "--original-loop", str(data_file)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

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


def bench_train(texts, labels, rows: list, steps: int) -> None:
    default_data, default_vocab = encode_for(texts, labels, min_freq=2, max_size=30000, max_length=128)
    ids, lengths, original_vocab = original_encode(texts)
    recipe = default_loop(default_vocab, default_data, adversarial=DEFAULT_ADVERSARIAL)
    ours = default_loop(default_vocab, default_data)
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "original.npz"
        np.savez(data_file, ids=ids, lengths=lengths, labels=labels, vocab_size=original_vocab)
        seed = original_loop(data_file)
        as_it_ran = OriginalProcess(data_file)
        runners = [recipe, ours, seed, as_it_ran]
        if PRECISION != "32-true":
            full = default_loop(default_vocab, default_data, precision="32-true")
            runners.append(full)
        try:
            in_turns(runners, steps)
        finally:
            as_it_ran.close()
    rows.append((f"training throughput, default recipe (plain loop, {PRECISION}, adversarial training "
                 f"{DEFAULT_ADVERSARIAL:g}); the original recipe: vocabulary {original_vocab - 1:,} words, "
                 "batch 50, Adam, 32-true", f"{recipe.throughput:,.0f} reviews/s", ">= 3x", ""))
    rows.append(("  the default model's plain step (no adversarial pass)", f"{ours.throughput:,.0f} reviews/s", "",
                 f"{ours.throughput / recipe.throughput:.2f}x the recipe's step"))
    if PRECISION != "32-true":
        rows.append(("  the same in 32-true", f"{full.throughput:,.0f} reviews/s", "",
                     f"{ours.throughput / full.throughput:.2f}x in {PRECISION}"))
    for name, reference in (("as it ran (its own process: glibc's malloc defaults, no denormal flush)", as_it_ran),
                            ("with `configure_cpu()`, in this process", seed)):
        rows.append((f"  vs the original recipe {name}", f"{reference.throughput:,.0f} reviews/s", ">= 3x",
                     f"recipe {recipe.throughput / reference.throughput:.1f}x, "
                     f"plain step {ours.throughput / reference.throughput:.1f}x"))


# --- 3. Lightning's overhead ----------------------------------------------------------------------------


class _FixedData(L.LightningDataModule):
    def __init__(self, dataset):
        super().__init__()
        self.data = dataset

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.data, batch_size=64, shuffle=True, collate_fn=_as_batch)


class FitTimer(L.Callback):
    """Times the training steps of a fit after its first ``warmup`` steps (counted across epochs: a small
    corpus has fewer batches per epoch). ``bench_cores`` loads it into `sentiment fit`
    (``--trainer.callbacks+=benchmark.FitTimer``); there rank 0 writes ``{"seen", "seconds"}`` to
    $SENTIMENT_FIT_TIMER."""

    def __init__(self, warmup: int = WARMUP_STEPS):
        self.warmup, self.steps, self.start, self.seen, self.seconds = warmup, 0, None, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps += 1
        if self.steps == self.warmup + 1:
            self.start, self.seen = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.seen += len(batch["labels"])
            self.seconds = time.perf_counter() - self.start

    def on_train_end(self, trainer, pl_module):
        if not self.seen:
            raise RuntimeError(f"FitTimer: the fit ended within its {self.warmup} warm-up steps")
        if trainer.global_rank == 0 and "SENTIMENT_FIT_TIMER" in os.environ:
            Path(os.environ["SENTIMENT_FIT_TIMER"]).write_text(json.dumps({"seen": self.seen, "seconds": self.seconds}))


class _TrainerRunner(_Timed):
    """``Trainer.fit`` on the same model for ``steps`` steps at a time (each fit's first step untimed)."""

    def __init__(self, model: SentimentClassifier, data) -> None:
        self.model, self.data = model, data

    def run(self, steps: int, timed: bool = True) -> None:
        timer = FitTimer(warmup=1)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = L.Trainer(accelerator="cpu", precision=PRECISION, max_steps=steps + 1, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                limit_val_batches=0, default_root_dir=tmp, callbacks=[timer])
            trainer.fit(self.model, _FixedData(self.data))
        if timed:
            self.seen, self.seconds = self.seen + timer.seen, self.seconds + timer.seconds


def bench_lightning(texts, labels, rows: list, steps: int) -> None:
    """``Trainer`` against a plain loop on the recipe's step (with adversarial training) and on the plain step
    (without): Lightning's cost per step is about the same in both, so it weighs twice as much on the second."""
    data, vocab_size = encode_for(texts, labels, min_freq=2, max_size=30000, max_length=128)
    pairs = []
    for adversarial in (DEFAULT_ADVERSARIAL, 0.0):
        plain = default_loop(vocab_size, data, adversarial=adversarial)
        torch.manual_seed(0)
        lightning = _TrainerRunner(SentimentClassifier(vocab_size=vocab_size, lr=4e-3, adversarial=adversarial,
                                                       **DEFAULT_MODEL), data)
        pairs.append((lightning, plain))
    in_turns([runner for pair in pairs for runner in pair], steps)
    for (lightning, plain), name in zip(pairs, (f"the recipe's step (adversarial training {DEFAULT_ADVERSARIAL:g})",
                                                "the plain step")):
        rows.append((f"training throughput, `Trainer` + SentimentClassifier, {name}",
                     f"{lightning.throughput:,.0f} reviews/s", "<= 5% slower",
                     f"{100 * (plain.throughput / lightning.throughput - 1):+.1f}% vs plain loop "
                     f"({plain.throughput:,.0f} reviews/s)"))


# --- 4. predictions -------------------------------------------------------------------------------------


def default_checkpoint(texts: list[str], path: Path, settings: dict = DEFAULT_MODEL) -> Path:
    """A checkpoint of the default model with its vocabulary (untrained weights: speed does not depend on them)."""
    vocab, _, _ = encode_corpus(texts, min_freq=2, max_size=30000, max_length=128)
    model = SentimentClassifier(vocab_size=len(vocab), **settings)
    model.text_encoder = TextEncoder(vocab)
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                  "pytorch-lightning_version": L.__version__}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def _predict_seconds(ckpt: Path, reviews: Path, out: Path) -> float:
    argv, sys.argv = sys.argv, ["sentiment"]
    try:
        elapsed, _ = timed(lambda: cli_main(["predict", "--ckpt_path", str(ckpt), "--data.predict_file",
                                             str(reviews), "--data.predict_batch_size", "256",
                                             "--prediction_writer.output_path", str(out),
                                             "--trainer.enable_progress_bar", "false"]))
    finally:
        sys.argv = argv
    return elapsed


def bench_predict(texts: list[str], labels, rows: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reviews = Path(tmp) / "reviews.txt"
        reviews.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
        out = Path(tmp) / "predictions.csv"
        for name, settings in (("default model", DEFAULT_MODEL), ("`imdb_fast.yaml` model", FAST_MODEL)):
            ckpt = default_checkpoint(texts, Path(tmp) / "model.ckpt", settings)
            elapsed = _predict_seconds(ckpt, reviews, out)
            with open(out) as f:
                n_rows = sum(1 for _ in csv.reader(f)) - 1
            assert n_rows == len(texts), (n_rows, len(texts))
            rows.append((f"`sentiment predict`, {name}, {len(texts):,} raw reviews -> CSV (the command in "
                         f"process after its imports, {PRECISION})", f"{len(texts) / elapsed:,.0f} reviews/s",
                         ">= 5,000/s", f"{elapsed:.1f} s"))
            if settings is DEFAULT_MODEL:
                loaded = SentimentClassifier.load_from_checkpoint(ckpt)
    loaded.predict(texts[0])
    latencies = []
    for text in texts[:200]:
        start = time.perf_counter()
        loaded.predict(text)
        latencies.append(time.perf_counter() - start)
    rows.append(("`SentimentClassifier.predict`, default model, one review",
                 f"{1000 * statistics.median(latencies):.2f} ms median", "<= 5 ms",
                 f"p99 {1000 * np.percentile(latencies, 99):.2f} ms"))


# --- 5. how to spend the cores --------------------------------------------------------------------------

CORE_LAYOUTS = [
    ("1 process x 2 threads", [], {}),
    ("1 process x 1 thread", [], {"OMP_NUM_THREADS": "1"}),
    ("DDP, 2 processes x 1 thread (gloo)", ["--trainer.strategy", "ddp", "--trainer.devices", "2"], {"OMP_NUM_THREADS": "1"}),
]


def _fit_throughput(data_dir: Path, root: Path, steps: int, extra: list[str], env: dict, processes: int) -> float:
    """Reviews per second of `sentiment fit`'s training steps after the warm-up, all processes together."""
    timing = root / "timing.json"
    cmd = [sys.executable, "-m", "sentiment", "fit", "--config", str(ROOT / "configs" / "imdb.yaml"),
           "--data.data_dir", str(data_dir), "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
           "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
           "--trainer.logger", "false", "--trainer.default_root_dir", str(root), "--checkpoint.monitor", "null",
           "--checkpoint.save_top_k", "0", "--checkpoint.save_last", "false",
           "--trainer.callbacks+=benchmark.FitTimer", *extra]
    pythonpath = os.pathsep.join(filter(None, [str(ROOT / "scripts"), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, **env, "PYTHONPATH": pythonpath, "SENTIMENT_FIT_TIMER": str(timing)})
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    measured = json.loads(timing.read_text())
    return measured["seen"] * processes / measured["seconds"]


def bench_cores(archive: Path, rows: list, steps: int) -> None:
    """Training throughput of `sentiment fit` in each layout, timed inside the run (after the warm-up steps);
    the mean of two runs of each, taken in turns."""
    layouts = CORE_LAYOUTS if steps > 10 else CORE_LAYOUTS[-1:]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        os.symlink(archive.resolve(), data_dir / ("aclImdb" if archive.is_dir() else "aclImdb_v1.tar.gz"))
        root = Path(tmp) / "runs"
        root.mkdir()
        rounds = 2 if steps > 10 else 1  # in turns, as in_turns does: a drifting machine slows every layout alike
        rates: dict[str, list[float]] = {name: [] for name, _, _ in layouts}
        for _ in range(rounds):
            for name, extra, env in layouts:
                processes = 2 if "--trainer.strategy" in extra else 1
                rates[name].append(_fit_throughput(data_dir, root, steps, extra, env, processes))
        results = [(name, statistics.mean(r)) for name, r in rates.items()]
    best = max(r for _, r in results)
    for name, rate in results:
        rows.append((f"`sentiment fit`, {name}", f"{rate:,.0f} reviews/s", "fastest is the default",
                     "fastest" if rate == best else f"{rate / best:.2f}x the fastest"))


# --- 6. the HTTP server ---------------------------------------------------------------------------------


def _load(port: int, texts: list[str], requests: int, clients: int) -> tuple[float, list[float], int]:
    """``requests`` single-review POST /predict calls from ``clients`` keep-alive connections at once."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    queue = iter(range(requests))

    def client() -> None:
        nonlocal failures
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = next(queue, None)
            if i is None:
                break
            body = json.dumps({"texts": [texts[i % len(texts)]]})
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                ok = response.status == 200 and len(json.loads(response.read())["predictions"]) == 1
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                latencies.append(time.perf_counter() - start)
                failures += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, failures


def bench_serve(texts: list[str], rows: list, requests: int, clients: int = 16) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = default_checkpoint(texts, Path(tmp) / "model.ckpt")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "sentiment", "serve", "--ckpt_path", str(ckpt),
                                   "--port", str(port)], cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sentiment serve did not start: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)
            _load(port, texts, min(200, requests), clients)  # warm up
            elapsed, latencies, failures = _load(port, texts, requests, clients)
        finally:
            server.terminate()
            server.wait(timeout=60)
    ms = np.percentile(latencies, [50, 99]) * 1000
    rows.append((f"`sentiment serve`, {requests:,} single-review requests from {clients} clients (loopback)",
                 f"p50 {ms[0]:.1f} ms, p99 {ms[1]:.1f} ms", "p99 < 50 ms, no failure",
                 f"{requests / elapsed:,.0f} requests/s, {failures} failed"))


# --- the report -----------------------------------------------------------------------------------------


def report(rows: list, args) -> str:
    lines = [MARK_START, "",
             f"Measured {datetime.date.today().isoformat()} by `python scripts/benchmark.py"
             f"{' --quick' if args.quick else ''}` on: {machine()}.", "",
             "| what | measured | goal | ratio / note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines + ["", MARK_END])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="IMDb archive or aclImdb/ folder")
    parser.add_argument("--quick", action="store_true", help="2,000 reviews and a few steps; writes nothing")
    parser.add_argument("--only", default=",".join(ALL_SECTIONS),
                        help="comma-separated sections; a partial run prints its rows but writes nothing")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="file whose table is replaced")
    parser.add_argument("--original-loop", type=Path, help=argparse.SUPPRESS)  # OriginalProcess's child
    args = parser.parse_args(argv)
    if args.original_loop:
        return original_loop_worker(args.original_loop)  # before configure_cpu: the original ran without it
    configure_cpu()  # as `sentiment` does; both sides of every comparison run in this process
    if not args.archive.exists():
        parser.error(f"{args.archive}: no such archive (pass --archive)")
    train = read_imdb(args.archive, ("train",))["train"]
    texts, labels = train.texts, train.labels
    if args.quick:
        pick = np.random.default_rng(0).permutation(len(texts))[:2000]
        texts, labels = [texts[i] for i in pick], labels[pick]
    steps = 5 if args.quick else 100
    sections = set(args.only.split(","))
    rows: list = []
    if "tokenize" in sections:
        bench_tokenize(texts, rows, repeat=1 if args.quick else 3)
    if "train" in sections:
        bench_train(texts, labels, rows, steps)
    if "lightning" in sections:
        bench_lightning(texts, labels, rows, steps)
    if "predict" in sections:
        bench_predict(texts, labels, rows)
    if "serve" in sections:
        bench_serve(texts, rows, requests=200 if args.quick else 2000)
    if "cores" in sections:
        bench_cores(args.archive, rows, steps=WARMUP_STEPS + (4 if args.quick else 100))
    table = report(rows, args)
    print(table)
    if not args.quick and sections >= set(ALL_SECTIONS):  # the table is one run's, never a patchwork
        text = args.output.read_text() if args.output.exists() else f"# Benchmarks\n\n{MARK_START}\n{MARK_END}\n"
        head, rest = text.split(MARK_START, 1)
        args.output.write_text(head + table + rest.split(MARK_END, 1)[1])
        print(f"updated {args.output}")


if __name__ == "__main__":
    main()
