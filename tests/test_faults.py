"""Stopped runs: SIGKILL mid-epoch and Ctrl-C, then `fit --ckpt_path last` ends where an unstopped run ends."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_reviews, run_cli, write_csv

TESTS = Path(__file__).resolve().parent
STEPS_PER_EPOCH = 23  # 360 training reviews in batches of 16
EPOCHS = 3


def fit(root: Path, train: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["fit", "--data.train_file", str(train), "--data.data_dir", str(train.parent / "data"),
            "--data.batch_size", "16", "--data.min_freq", "1",
            "--model.hidden_dim", "8", "--model.embed_dim", "8", "--model.word_dropout", "0.2",
            "--model.lr", "0.01", "--model.lr_schedule", "onecycle", "--autosave.every_n_steps", "4",
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
    train = write_csv(folder / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(400)])
    done = fit(folder / "reference", train)
    assert done.returncode == 0, done.stderr[-3000:]
    return train, last_checkpoint(folder / "reference")


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(reference, tmp_path):
    train, expected = reference
    kill_at = STEPS_PER_EPOCH + 10  # in the second epoch
    killed = fit(tmp_path, train, *signal_at(kill_at, int(signal.SIGKILL)))
    assert killed.returncode == -signal.SIGKILL
    assert last_checkpoint(tmp_path)["global_step"] == kill_at // 4 * 4  # saved every 4 steps: 1 step lost
    assert not list(tmp_path.glob("lightning_logs/version_0/checkpoints/.*.tmp"))

    resumed = fit(tmp_path, train, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr
    assert_same_run(last_checkpoint(tmp_path), expected)


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
    import sentiment.callbacks

    monkeypatch.setattr(sentiment.callbacks.torch, "save", _full_disk_after(2, torch.save))  # epoch 1 saved
    code = run_cli("fit", "--data.train_file", str(tiny_csv), "--data.data_dir", str(tmp_path / "data"),
                   "--model.hidden_dim", "8", "--model.embed_dim", "8", "--trainer.max_epochs", "3",
                   "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false")
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: [Errno 28] No space left on device"
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary file
    monkeypatch.undo()
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0  # the first epoch's, whole


def test_a_full_disk_while_writing_predictions_leaves_no_file(trained, tmp_path, monkeypatch, capsys):
    import sentiment.callbacks

    real = sentiment.callbacks.PredictionWriter.write_on_batch_end
    monkeypatch.setattr(sentiment.callbacks.PredictionWriter, "write_on_batch_end", _full_disk_after(1, real))
    (tmp_path / "new.txt").write_text("superb\nawful\n" * 100)
    code = run_cli("predict", "--ckpt_path", str(trained["best"]), "--data.predict_file", str(tmp_path / "new.txt"),
                   "--data.predict_batch_size", "16", "--prediction_writer.output_path", str(tmp_path / "out.csv"),
                   "--trainer.enable_progress_bar", "false")
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: [Errno 28] No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt"]
