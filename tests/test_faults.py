"""Stopped runs: SIGKILL mid-epoch and Ctrl-C, then `fit --ckpt_path last` ends where an unstopped run ends."""

import errno
import json
import math
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import make_reviews, run_cli, write_csv

from sentiment.training.callbacks import AtomicCheckpointIO, AutoSave, ModelCheckpoint
from sentiment.training.classifier import SentimentClassifier
from sentiment.data.datamodule import SentimentDataModule

TESTS = Path(__file__).resolve().parent
REVIEWS, VAL_FRACTION, BATCH_SIZE = 400, 0.1, 16  # VAL_FRACTION: the data module's default
STEPS_PER_EPOCH = math.ceil(round(REVIEWS * (1 - VAL_FRACTION)) / BATCH_SIZE)
EPOCHS = 3
SAVE_EVERY = 4  # steps between saves of last.ckpt


def fit(root: Path, train: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["fit", "--data.train_file", str(train), "--data.data_dir", str(train.parent / "data"),
            "--data.loader.min_epoch_size", "0",
            "--data.loader.batch_size", str(BATCH_SIZE), "--data.encoding.min_freq", "1",
            "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8", "--model.net.word_dropout", "0.2",
            "--model.lr", "0.01", "--model.lr_schedule", "onecycle", "--autosave.every_n_steps", str(SAVE_EVERY),
            "--trainer.max_epochs", str(EPOCHS), "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sentiment", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def signal_at(step: int, signum: int) -> list[str]:
    callback = {"class_path": "signals.SignalAtStep", "init_args": {"step": step, "signum": signum}}
    return ["--trainer.callbacks+=" + json.dumps(callback)]


def last_checkpoint(root: Path) -> dict:
    return torch.load(root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)


def assert_same_run(resumed: dict, reference: dict) -> None:
    assert resumed["global_step"] == reference["global_step"] == EPOCHS * STEPS_PER_EPOCH
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    best = [(k, v["best_model_score"]) for k, v in reference["callbacks"].items() if "best_model_score" in v]
    assert best and all(resumed["callbacks"][k]["best_model_score"] == score for k, score in best)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its training file and its final checkpoint."""
    folder = tmp_path_factory.mktemp("faults")
    train = write_csv(folder / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(REVIEWS)])
    done = fit(folder / "reference", train)
    assert done.returncode == 0, done.stderr[-3000:]
    return train, last_checkpoint(folder / "reference")


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(reference, tmp_path):
    train, expected = reference
    kill_at = STEPS_PER_EPOCH + 10  # in the second epoch
    killed = fit(tmp_path, train, *signal_at(kill_at, int(signal.SIGKILL)))
    assert killed.returncode == -signal.SIGKILL
    assert last_checkpoint(tmp_path)["global_step"] == kill_at // SAVE_EVERY * SAVE_EVERY  # since then: lost
    assert not list(tmp_path.glob("lightning_logs/version_0/checkpoints/.*.tmp"))

    resumed = fit(tmp_path, train, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr
    assert_same_run(last_checkpoint(tmp_path), expected)


@pytest.mark.slow
def test_ctrl_c_saves_last_and_stops_cleanly_then_resumes(reference, tmp_path):
    train, expected = reference
    stopped = fit(tmp_path, train, *signal_at(STEPS_PER_EPOCH + 5, int(signal.SIGINT)))
    assert stopped.returncode != 0
    assert "Traceback" not in stopped.stderr
    assert "continue with the same command and --ckpt_path last" in stopped.stdout + stopped.stderr
    assert last_checkpoint(tmp_path)["global_step"] == STEPS_PER_EPOCH + 6  # the step under way was finished

    resumed = fit(tmp_path, train, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(last_checkpoint(tmp_path), expected)


def _full_disk_after(calls: int, real):
    """A stand-in for a writer that fails with ENOSPC once ``calls`` writes have succeeded."""
    count = {"n": 0}

    def write(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    return write


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, tiny_csv,
                                                                                        monkeypatch, capsys):
    import sentiment.training.callbacks

    monkeypatch.setattr(sentiment.training.callbacks.torch, "save", _full_disk_after(2, torch.save))  # epoch 1 saved
    code = run_cli("fit", "--data.train_file", str(tiny_csv), "--data.data_dir", str(tmp_path / "data"),
                   "--data.loader.min_epoch_size", "0",
                   "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8", "--trainer.max_epochs", "3",
                   "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false")
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: [Errno 28] No space left on device"
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary file
    monkeypatch.undo()
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0  # the first epoch's, whole


def test_a_full_disk_while_writing_predictions_leaves_no_file(trained, tmp_path, monkeypatch, capsys):
    import sentiment.training.callbacks

    real = sentiment.training.callbacks.PredictionWriter.write_on_batch_end
    monkeypatch.setattr(sentiment.training.callbacks.PredictionWriter, "write_on_batch_end", _full_disk_after(1, real))
    (tmp_path / "new.txt").write_text("superb\nawful\n" * 100)
    code = run_cli("predict", "--ckpt_path", str(trained["best"]), "--data.predict_file", str(tmp_path / "new.txt"),
                   "--data.loader.predict_batch_size", "16", "--prediction_writer.output_path",
                   str(tmp_path / "out.csv"),
                   "--trainer.enable_progress_bar", "false")
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: [Errno 28] No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt"]


@pytest.mark.parametrize("minutes", [1.0, 0.0])
def test_autosave_saves_last_every_so_many_minutes_of_training(tmp_path, tiny_csv, minutes):
    # a clock that moves 25 s per training step: with minutes=1, last.ckpt is due at 75 s, then 75 s later ...
    # and at every epoch's end; with minutes=0 only at every epoch's end
    now = [0.0]

    class Tick(L.Callback):
        def on_train_batch_end(self, *args):
            now[0] += 25.0

    saved = []

    class Written(AtomicCheckpointIO):  # what reaches the disk as last.ckpt, at which step
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if Path(path).name == "last.ckpt":
                saved.append(checkpoint["global_step"])
            super().save_checkpoint(checkpoint, path, storage_options)

    class Clocked(AutoSave):
        clock = staticmethod(lambda: now[0])

    dm = SentimentDataModule(data_dir=str(tmp_path / "data"), train_file=str(tiny_csv), encoding={"min_freq": 1},
                             loader={"batch_size": 8, "min_epoch_size": 0})
    dm.prepare_data()
    model = SentimentClassifier(vocab_size=dm.vocab_size, adversarial=0.0, net={"embed_dim": 8, "hidden_dim": 8})
    epochs = 2
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                        callbacks=[Tick(), ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/acc", mode="max"),
                                   Clocked(minutes=minutes)], plugins=[Written()])
    trainer.fit(model, dm)
    per_epoch = trainer.num_training_batches
    assert per_epoch >= 4  # room for a timed save inside an epoch
    expected, last_save = [], 0.0  # due once `minutes` have passed since the last save, and at each epoch's end
    for step in range(1, epochs * per_epoch + 1):
        if (minutes and 25.0 * step - last_save >= 60 * minutes) or step % per_epoch == 0:
            expected.append(step)
            last_save = 25.0 * step
    assert saved == expected
    assert expected[:2] == ([3, 6] if minutes else [per_epoch, 2 * per_epoch])  # 75 s: the third step is due
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == epochs * per_epoch


@pytest.mark.slow
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask(trained, tmp_path, umask, mode):
    # what a user gets back (predictions, an ONNX model, a checkpoint) is as readable as any file they write
    (tmp_path / "in.txt").write_text("a fine film\n")
    commands = [["predict", "--ckpt_path", str(trained["best"]), "--data.predict_file", str(tmp_path / "in.txt"),
                 "--prediction_writer.output_path", str(tmp_path / "out.csv"),
                 "--trainer.enable_progress_bar", "false"],
                ["export", "--ckpt_path", str(trained["best"]), "--output", str(tmp_path / "model.onnx")]]
    for args in commands:
        subprocess.run([sys.executable, "-m", "sentiment", *args], check=True, capture_output=True,
                       preexec_fn=lambda: os.umask(umask))
    code = (f"import os; os.umask({umask}); from sentiment.inference.checkpoint import write_checkpoint; "
            f"write_checkpoint({{'x': 1}}, {str(tmp_path / 'a.ckpt')!r})")
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in ("out.csv", "model.onnx", "a.ckpt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
