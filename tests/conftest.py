"""Shared fixtures: tiny corpora and a tiny IMDb archive, written by the tests themselves."""

from __future__ import annotations

import csv
import http.server
import io
import random
import tarfile
import threading
from pathlib import Path

import lightning as L
import pytest
import torch

from sentiment.cli import cli_main
from sentiment.cpu import NO_BFLOAT16, native_bfloat16

# bfloat16-only paths: elsewhere PyTorch has no bfloat16 LSTM, and `sentiment` computes in float32 instead
needs_bfloat16 = pytest.mark.skipif(not native_bfloat16(), reason=NO_BFLOAT16)
# PyTorch made to behave like a CPU with AVX2 only (no AVX-512, no bfloat16); on such a CPU, no change
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

REAL_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aclImdb_train.tar.gz"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

POSITIVE = ["great", "wonderful", "loved", "excellent", "brilliant", "moving", "superb", "fun"]
NEGATIVE = ["awful", "boring", "hated", "terrible", "dull", "worst", "waste", "bad"]
FILLER = "the movie was a and of it this film i story plot acting scenes".split()


def make_review(rng: random.Random, positive: bool, n_words: tuple[int, int] = (5, 60)) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(*n_words))]
    for _ in range(3):
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if positive else NEGATIVE))
    return " ".join(words).capitalize() + ".<br /><br />" + rng.choice(["Really!", "Why?", "Ok."])


NEUTRAL = ["average", "okay", "mediocre", "decent", "middling", "fine", "passable", "mixed"]


def make_polar_reviews(n: int, seed: int = 0, shares=(1, 1, 1)) -> list[tuple[str, str]]:
    """Reviews of three classes, negative / neutral / positive, in the proportions ``shares`` (cycled)."""
    rng = random.Random(seed)
    cycle = [c for c, share in zip(("negative", "neutral", "positive"), shares) for _ in range(share)]
    rows = []
    for i in range(n):
        label = cycle[i % len(cycle)]
        words = [rng.choice(FILLER) for _ in range(rng.randint(5, 30))]
        vocabulary = {"negative": NEGATIVE, "neutral": NEUTRAL, "positive": POSITIVE}[label]
        for _ in range(3):
            words.insert(rng.randrange(len(words) + 1), rng.choice(vocabulary))
        rows.append((" ".join(words).capitalize() + ".", label))
    return rows


def make_reviews(n: int, seed: int = 0) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(make_review(rng, bool(i % 2)), i % 2) for i in range(n)]


def write_csv(path: Path, rows, header=("text", "label"), delimiter=",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_imdb_archive(path: Path, n_train: int = 200, n_test: int = 100, extra=(), movies: int = 0,
                       unsup: bool = True) -> Path:
    """An archive in the official aclImdb layout (with an unsup/ folder of one review unless ``unsup`` is False);
    with ``movies``,
    the training split's urls_pos.txt and urls_neg.txt name that many movies, each reviewed several times, in
    both classes."""
    rng = random.Random(1)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", n_train), ("test", n_test)):
            for i in range(n):
                label = "pos" if i % 2 else "neg"
                rating = rng.randint(7, 10) if i % 2 else rng.randint(1, 4)
                add_bytes(tar, f"aclImdb/{split}/{label}/{i}_{rating}.txt",
                          make_review(rng, bool(i % 2)).encode())
        if movies:
            for label in ("neg", "pos"):  # review i of either class is about movie i mod movies
                add_bytes(tar, f"aclImdb/train/urls_{label}.txt", "".join(
                    f"http://www.imdb.com/title/tt{i % movies:07d}/usercomments\n" for i in range(n_train)).encode())
        if unsup:
            add_bytes(tar, "aclImdb/train/unsup/0_0.txt", b"unlabelled review")
        add_bytes(tar, "aclImdb/README", b"readme")
        for name, data in extra:
            add_bytes(tar, name, data)
    return path


def build_archive_with_unlabelled(data_dir, n: int = 60) -> list[bool]:
    """A small archive whose unsup/ folder holds ``n`` generated reviews (and the builder's own one); their
    sentiment, in the order they are read."""
    rng = random.Random(3)
    truth = [bool(i % 2) for i in range(n)]
    unsup = [(f"aclImdb/train/unsup/{i + 1}_0.txt", make_review(rng, t).encode()) for i, t in enumerate(truth)]
    data_dir.mkdir()
    build_imdb_archive(data_dir / "aclImdb_v1.tar.gz", 200, 0, extra=unsup)
    return truth


@pytest.fixture
def imdb_dir(tmp_path: Path) -> Path:
    """A data_dir holding a small aclImdb_v1.tar.gz."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    build_imdb_archive(data_dir / "aclImdb_v1.tar.gz")
    return data_dir


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(300)])


class ArchiveServer:
    """Serves ``body`` on 127.0.0.1 at any path; ``truncate`` announces the full length but sends only part of it."""

    def __init__(self, body: bytes, truncate: bool = False, status: int = 200):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                if outer.status == 200:
                    self.wfile.write(outer.body[: len(outer.body) // 2] if outer.truncate else outer.body)

            def log_message(self, *args):
                pass

        self.body, self.truncate, self.status = body, truncate, status
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/aclImdb_v1.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def run_cli(*args):
    """The exit code `sentiment ARGS` would give."""
    try:
        cli_main(list(args))
    except SystemExit as e:
        return e.code or 0
    return 0


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tiny fit shared by the CLI, bad-input and serve tests: its folder, checkpoint and data files."""
    root = tmp_path_factory.mktemp("fit")
    train = write_csv(root / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(400)])
    test = write_csv(root / "test.csv", [(t, y) for t, y in make_reviews(60, seed=5)])
    args = ["fit", "--data.train_file", str(train), "--data.test_file", str(test), "--data.loader.min_epoch_size", "0",
            "--data.data_dir", str(root / "data"), "--data.loader.batch_size", "32", "--data.encoding.min_freq", "1",
            "--model.lr", "0.01", "--model.net.hidden_dim", "16", "--model.net.embed_dim", "16",
            "--model.net.pooling", "mean_max",
            "--trainer.max_epochs", "8", "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "2"]
    assert run_cli(*args) == 0
    ckpt_dir = root / "lightning_logs" / "version_0" / "checkpoints"
    return {"root": root, "best": ckpt_dir / "best.ckpt", "last": ckpt_dir / "last.ckpt", "test": test}


class RecordModel(L.Callback):
    """Writes the hyperparameters of the model and data module a fit was given to ``data_dir/built.yaml``."""

    def on_fit_start(self, trainer, pl_module):
        import yaml

        built = {"model": dict(pl_module.hparams), "data": dict(trainer.datamodule.hparams)}
        (Path(trainer.datamodule.hparams.data_dir) / "built.yaml").write_text(yaml.safe_dump(built))


@pytest.fixture(scope="session")
def three(tmp_path_factory):
    """A tiny negative / neutral / positive corpus, fitted with the default recipe's command."""
    root = tmp_path_factory.mktemp("three")
    train = write_csv(root / "train.csv", make_polar_reviews(900))
    test = write_csv(root / "test.csv", make_polar_reviews(90, seed=5))
    assert run_cli("fit", "--config", str(CONFIGS / "imdb.yaml"), "--data.train_file", str(train),
                   "--data.test_file", str(test), "--data.data_dir", str(root / "data"), "--data.encoding.min_freq",
                   "1",
                   "--data.loader.min_epoch_size", "0", "--model.net.hidden_dim", "16", "--model.net.embed_dim", "16",
                   "--model.adversarial", "0", "--trainer.max_epochs", "8", "--trainer.log_every_n_steps", "5",
                   "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)) == 0
    return {"root": root, "best": root / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt", "test": test}


def make_buried_reviews(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Long reviews whose verdict is one word in the middle: with ``max_length`` 16 (the first 8 and the last 8
    tokens) the recurrent network never reads it; the bag of n-grams over the whole review does."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = bool(i % 2)
        words = [rng.choice(FILLER) for _ in range(60)]
        words.insert(rng.randint(20, 40), rng.choice(POSITIVE if positive else NEGATIVE))
        rows.append((" ".join(words), "pos" if positive else "neg"))
    return rows


BAG_FIT = ["--data.loader.min_epoch_size", "0", "--data.encoding.min_freq", "1", "--data.encoding.max_length", "16",
           "--data.encoding.bag_min_count", "1", "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8",
           "--model.adversarial", "0",
           "--model.lr", "0.01", "--model.bag_lr", "0.05", "--trainer.max_epochs", "6",
           "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="session")
def bagged(tmp_path_factory):
    """A tiny fit with a bag of 1-2 grams on reviews whose verdict lies beyond the recurrent network's 16 tokens."""
    root = tmp_path_factory.mktemp("bagged")
    train = write_csv(root / "train.csv", make_buried_reviews(400))
    test = write_csv(root / "test.csv", make_buried_reviews(80, seed=5))
    assert run_cli("fit", "--data.train_file", str(train), "--data.test_file", str(test),
                   "--data.encoding.bag_ngrams", "2",
                   "--data.data_dir", str(root / "data"), "--trainer.default_root_dir", str(root), *BAG_FIT) == 0
    return {"root": root, "best": root / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt",
            "train": train, "test": test}


def _events_acc(root: Path) -> float:
    """The last val/acc a fit under ``root`` logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(root / "lightning_logs" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars("val/acc")[-1].value


class RecordThreads(L.Callback):
    """Appends the torch threads of each training step to ``data_dir/threads.txt``."""

    def on_train_batch_end(self, trainer, pl_module, *args):
        with open(Path(trainer.datamodule.hparams.data_dir) / "threads.txt", "a") as f:
            f.write(f"{torch.get_num_threads()}\n")
