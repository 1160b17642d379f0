"""The `sentiment` command end to end on a tiny corpus: fit, then test and predict from the checkpoint alone."""

import csv
import json
import logging
import re
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import build_archive_with_unlabelled, build_imdb_archive, make_reviews, run_cli, write_csv

from sentiment.training.classifier import SentimentClassifier
from sentiment.cli import cli_main
from sentiment.inference.predictor import Predictor
from sentiment.data.sources import read_imdb_unlabelled

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_fit_writes_best_and_last_checkpoints_and_tensorboard_logs(trained):
    assert trained["best"].is_file() and trained["last"].is_file()
    run = trained["root"] / "lightning_logs" / "version_0"
    events = _events(run)
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/acc", "train/lr", "val/acc", "val/f1", "val/precision", "val/recall",
                "val/auroc", "val/loss", "hp/val_acc"):
        assert tag in scalars, tag
    assert "val/confusion_matrix" in events.Tags()["images"]
    assert "val/pr_curve" in events.Tags()["tensors"]
    assert events.Scalars("val/acc")[-1].value > 0.9
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["vocab_size"] > 2 and "hidden_dim" in hparams["net"]


def test_checkpoint_alone_predicts_raw_text(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data, no config
    model = SentimentClassifier.load_from_checkpoint(trained["best"])
    out = model.predict(["Wonderful, brilliant, superb film.", "Awful, boring, terrible waste."])
    assert [o["label"] for o in out] == ["positive", "negative"]
    assert out[0]["scores"]["positive"] > 0.5 > out[1]["scores"]["positive"]
    assert all(o["score"] == max(o["scores"].values()) and set(o["scores"]) == {"negative", "positive"} for o in out)


def test_predict_from_the_checkpoint_writes_one_row_per_input_in_order(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reviews = ["A wonderful, brilliant film.", "", "Terrible and boring.", "superb fun"] * 30
    (tmp_path / "new.txt").write_text("\n".join(reviews) + "\n")
    code = run_cli("predict", "--ckpt_path", str(trained["best"]), "--data.predict_file", "new.txt",
                   "--data.loader.predict_batch_size", "16", "--prediction_writer.output_path", "out/preds.csv",
                   "--trainer.enable_progress_bar", "false")
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "preds.csv")))
    assert [int(r["index"]) for r in rows] == list(range(len(reviews)))
    assert [r["label"] for r in rows[:4:2]] == ["positive", "negative"]
    assert all(0 <= float(r["score"]) <= 1 for r, text in zip(rows, reviews) if text)
    # an empty line gets its row, marked as empty: no label, no scores
    assert all(r["label"] == r["score"] == r["p_positive"] == "" for r, text in zip(rows, reviews) if not text)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["preds.csv"]  # no temporary file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt", "out"]  # no logs, data or config.yaml


def test_predict_copies_the_id_column(trained, tmp_path):
    path = write_csv(tmp_path / "new.csv", [("r1", "brilliant superb"), ("r2", "awful dull")], header=("id", "text"))
    run_cli("predict", "--ckpt_path", str(trained["best"]), "--data.predict_file", str(path),
            "--prediction_writer.output_path", str(tmp_path / "p.csv"), "--trainer.enable_progress_bar", "false")
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [(r["index"], r["id"], r["label"]) for r in rows] == [("0", "r1", "positive"), ("1", "r2", "negative")]


def test_test_reads_data_settings_from_the_checkpoint(trained):
    # no --config: min_freq=1 and the data files come from the checkpoint, so the vocabulary matches
    assert run_cli("test", "--ckpt_path", str(trained["best"]), "--data.data_dir", str(trained["root"] / "data"),
                   "--trainer.default_root_dir", str(trained["root"] / "eval"),
                   "--trainer.enable_progress_bar", "false") == 0
    events = _events(trained["root"] / "eval" / "lightning_logs" / "version_0")
    for name in ("test/acc", "test/f1", "test/precision", "test/recall", "test/auroc", "test/loss"):
        assert name in events.Tags()["scalars"], name
    assert events.Scalars("test/acc")[-1].value > 0.9


def test_validate_scores_the_checkpoint_on_its_own_validation_split(trained, tmp_path):
    # the seeded split, the vocabulary and the weights all come back from the checkpoint: validation gives
    # exactly the accuracy and loss the run logged for its best epoch (another split or other weights would not)
    saved = torch.load(trained["best"], weights_only=True)
    (best,) = [v["best_model_score"] for k, v in saved["callbacks"].items() if k.startswith("ModelCheckpoint")]
    fit_events = _events(trained["root"] / "lightning_logs" / "version_0")
    (loss,) = [e.value for e in fit_events.Scalars("val/loss") if e.step == saved["global_step"] - 1]
    root = tmp_path / "eval"
    assert run_cli("validate", "--ckpt_path", str(trained["best"]), "--data.data_dir", str(trained["root"] / "data"),
                   "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false") == 0
    events = _events(root / "lightning_logs" / "version_0")
    assert {"val/acc", "val/f1", "val/auroc", "val/loss"} <= set(events.Tags()["scalars"])
    # the config it saved names the checkpoint it evaluated, so that it runs again
    saved_config = yaml.safe_load((root / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved_config["ckpt_path"] == str(trained["best"])
    assert events.Scalars("val/acc")[-1].value == pytest.approx(best.item(), abs=1e-6)
    assert events.Scalars("val/loss")[-1].value == pytest.approx(loss, abs=1e-5)


def test_a_checkpoint_from_before_the_split_by_movie_validates_on_its_own_random_split(tmp_path):
    # checkpoints written before `val_by_movie` existed carry no such setting: their runs were split at random,
    # and `validate` must score them on that split (by movie, the loss would differ)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    build_imdb_archive(data_dir / "aclImdb_v1.tar.gz", n_train=400, movies=40)
    assert run_cli("fit", "--data.data_dir", str(data_dir), "--data.encoding.min_freq", "1",
                   "--data.encoding.val_by_movie", "false",
                   "--data.loader.min_epoch_size", "0", "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8",
                   "--model.adversarial", "0", "--trainer.max_epochs", "1", "--trainer.default_root_dir",
                   str(tmp_path), "--trainer.enable_progress_bar", "false") == 0
    run = tmp_path / "lightning_logs" / "version_0"
    (logged,) = [e.value for e in _events(run).Scalars("val/loss")]
    old = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    # and in the layout of their time: every data setting at the top, none in groups
    saved = old["datamodule_hyper_parameters"]
    flat = {key: value for key, value in saved.items() if not isinstance(value, dict)}
    for group in ("encoding", "unlabelled", "loader", "imdb"):
        flat.update(saved.get(group, {}))
    del flat["val_by_movie"]
    old["datamodule_hyper_parameters"] = flat
    torch.save(old, tmp_path / "old.ckpt")
    best = run / "checkpoints" / "best.ckpt"
    for ckpt, root in ((tmp_path / "old.ckpt", tmp_path / "old"), (best, tmp_path / "new")):
        assert run_cli("validate", "--ckpt_path", str(ckpt), "--data.data_dir", str(data_dir),
                       "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false") == 0
        (loss,) = [e.value for e in _events(root / "lightning_logs" / "version_0").Scalars("val/loss")]
        assert loss == pytest.approx(logged, abs=1e-5)
    assert run_cli("validate", "--ckpt_path", str(tmp_path / "old.ckpt"), "--data.data_dir", str(data_dir),
                   "--data.encoding.val_by_movie", "true", "--trainer.default_root_dir", str(tmp_path / "by_movie"),
                   "--trainer.enable_progress_bar", "false") == 1  # another split than training's: refused


@pytest.mark.parametrize("option, value, saved", [("--data.encoding.max_size", "10", "30000"),
                                                  ("--data.encoding.min_freq", "2", "1")])  # 2: the default, given
def test_test_with_other_vocabulary_settings_is_refused_in_one_line(trained, tmp_path, capsys, option, value, saved):
    code = run_cli("test", "--ckpt_path", str(trained["best"]), "--data.data_dir", str(tmp_path / "data"),
                   "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                   option, value)
    assert code == 1
    name = option.split(".")[-1]
    assert capsys.readouterr().err == (f"error: --data.encoding differs from the checkpoint's: {name} {value} (the "
                                       f"checkpoint's: {saved}); the model reads reviews as it was trained: leave "
                                       "--data.encoding out\n")
    assert not (tmp_path / "data").exists()  # refused before any work


def test_predict_with_another_encoding_is_refused_in_one_line(trained, tmp_path, capsys):
    # predict reads texts as the checkpoint's model was trained to, or not at all: the default encoding (which the
    # tiny model was not trained with) is not assumed, and another one given is refused
    (tmp_path / "in.txt").write_text("a fine film\n")
    common = ["predict", "--ckpt_path", str(trained["best"]), "--data.predict_file", str(tmp_path / "in.txt"),
              "--trainer.enable_progress_bar", "false"]
    assert run_cli(*common, "--prediction_writer.output_path", str(tmp_path / "out.csv")) == 0
    assert run_cli(*common, "--prediction_writer.output_path", str(tmp_path / "no.csv"),
                   "--data.encoding.max_length", "64") == 1
    assert capsys.readouterr().err.startswith("error: --data.encoding differs from the checkpoint's: max_length 64 "
                                              "(the checkpoint's: 128)")
    assert not (tmp_path / "no.csv").exists()


def test_explicit_data_options_on_test_win_over_the_checkpoint(trained, tmp_path):
    # the settings the model was trained with, given again, are accepted; a new test file is read instead of
    # the checkpoint's: here every label flipped, so the accuracy must fall from above 0.9 to below 0.1
    flipped = write_csv(tmp_path / "flipped.csv",
                        [(row["text"], 1 - int(row["label"])) for row in csv.DictReader(open(trained["test"]))])
    root = tmp_path / "eval"
    assert run_cli("test", "--ckpt_path", str(trained["best"]), "--data.data_dir", str(trained["root"] / "data"),
                   "--data.encoding.min_freq", "1", "--data.encoding.max_length", "128", "--data.test_file",
                   str(flipped),
                   "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false") == 0
    assert _events(root / "lightning_logs" / "version_0").Scalars("test/acc")[-1].value < 0.1


@pytest.mark.parametrize("args, message", [
    (["predict", "--data.predict_file", "x.txt"], "needs a trained model: pass --ckpt_path"),
    (["test", "--ckpt_path", "nowhere.ckpt"], "nowhere.ckpt: no such checkpoint file"),
])
def test_cli_errors_are_one_line(args, message, capsys):
    assert run_cli(*args) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {err[len('error: '):]}" and message in err and "\n" not in err


@pytest.mark.parametrize("subcommand", ["predict", "test"])
def test_model_options_beside_a_checkpoint_are_refused_in_one_line(trained, tmp_path, capsys, subcommand):
    (tmp_path / "in.txt").write_text("a fine film\n")
    assert run_cli(subcommand, "--ckpt_path", str(trained["best"]), "--data.predict_file", str(tmp_path / "in.txt"),
                   "--model.net.hidden_dim", "32", "--model.lr=0.1", "--trainer.default_root_dir", str(tmp_path)) == 1
    assert capsys.readouterr().err == (f"error: `sentiment {subcommand}` takes the model from its checkpoint: leave "
                                       "out --model.net.hidden_dim, --model.lr\n")


def test_predict_without_input_is_a_clear_error(trained, capsys):
    assert run_cli("predict", "--ckpt_path", str(trained["best"])) == 1
    assert "needs reviews to classify: pass --data.predict_file" in capsys.readouterr().err


def _documented_command(config: Path) -> list[str]:
    """The `sentiment fit ...` line in a config's header: how README and the file itself say to run it."""
    line = next(line for line in config.read_text().splitlines() if line.startswith("#   sentiment fit "))
    return [str(ROOT / arg) if arg.startswith("configs/") else arg for arg in line[len("#   sentiment "):].split()]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_builds_its_model_and_data_and_runs_a_step(config, tmp_path, tiny_csv):
    # each config's own documented command, on a tiny corpus, one batch of fit (fast_dev_run)
    args = _documented_command(config)
    assert str(config) in args
    root = tmp_path / "run"
    (tmp_path / "data").mkdir()
    settings = yaml.safe_load(config.read_text())
    encoding = (settings.get("data") or {}).get("encoding") or {}
    if "target" in encoding or settings.get("self_training"):  # IMDb's own: its archive
        data = ["--data.data_dir", str(tmp_path / "data")]
        build_imdb_archive(tmp_path / "data" / "aclImdb_v1.tar.gz", n_train=300, n_test=20)
    else:
        data = ["--data.train_file", str(tiny_csv), "--data.data_dir", str(tmp_path / "data")]
    assert run_cli(*args, "--config", str(ROOT / "configs" / "debug.yaml"), *data,
                   "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
                   "--trainer.callbacks+=conftest.RecordModel") == 0
    built = yaml.safe_load((tmp_path / "data" / "built.yaml").read_text())
    layered = {}
    for path in args[args.index("--config") + 1 :: 2]:  # what the configs set, later ones over earlier ones
        _merge(layered, yaml.safe_load(Path(path).read_text()) or {})
    for section in ("model", "data"):
        for key, value in _leaves(layered.get(section, {})):
            if key[0] != "data_dir":
                found = built[section]
                for part in key:
                    found = found[part]
                assert found == value, (section, key)


def _merge(into: dict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _merge(into.setdefault(key, {}), value)
        else:
            into[key] = value


def _leaves(settings: dict, at: tuple = ()):
    for key, value in settings.items():
        yield from _leaves(value, (*at, key)) if isinstance(value, dict) else [((*at, key), value)]


def test_self_training_fits_its_teacher_once_and_trains_on_what_the_teacher_is_sure_of(tmp_path):
    data_dir = tmp_path / "data"
    build_archive_with_unlabelled(data_dir, 80)
    # one thread, fixed: the teacher and the plain fit must sum in the same order to be equal to the bit, which
    # threads that follow the machine's load (CpuThreads) do not promise when something else wakes up meanwhile
    recipe = ["--data.data_dir", str(data_dir), "--data.encoding.min_freq", "1", "--data.loader.min_epoch_size", "1000",
              "--data.loader.batch_size", "32", "--model.net.hidden_dim", "16", "--model.net.embed_dim", "16",
              "--model.lr", "0.01", "--cpu.threads", "1",
              "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false", "--seed_everything", "3"]

    def fit(name, *extra):
        assert run_cli("fit", *recipe, *extra, "--trainer.default_root_dir", str(tmp_path / name)) == 0
        return torch.load(tmp_path / name / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt",
                          weights_only=False)

    cold = fit("cold", "--self_training", "true", "--data.unlabelled.pseudo_confidence", "0.97")
    teachers = list(data_dir.glob(".sentiment_cache/*/teacher-*.ckpt"))
    assert len(teachers) == 1
    teacher, made = teachers[0], teachers[0].stat().st_mtime_ns
    # the teacher is this recipe fitted on the labelled reviews alone, as a plain fit with the same seed is
    plain = fit("plain")
    for name, weights in torch.load(teacher, weights_only=False)["state_dict"].items():
        assert torch.equal(weights, plain["state_dict"][name]), name
    # the student trained on the labelled reviews and the unlabelled ones the teacher gives 0.97 or more
    assert cold["datamodule_hyper_parameters"]["unlabelled"]["pseudo_labels"] == str(teacher)
    answers = Predictor.from_checkpoint(teacher).predict(read_imdb_unlabelled(data_dir / "aclImdb_v1.tar.gz"))
    sure = sum(a["score"] >= 0.97 for a in answers)
    assert 0 < sure < len(answers)
    splits = [json.loads(p.read_text())["splits"]["train"] for p in data_dir.glob(".sentiment_cache/*/meta.json")]
    assert sorted(splits) == [180, 180 + sure]
    # a later fit finds the teacher and trains the same student as the first, which trained the teacher too
    warm = fit("warm", "--self_training", "true", "--data.unlabelled.pseudo_confidence", "0.97")
    assert teacher.stat().st_mtime_ns == made
    for name, weights in cold["state_dict"].items():
        assert torch.equal(weights, warm["state_dict"][name]), name
    # the config a fit saved, which names the teacher it trained, runs again
    saved = tmp_path / "cold" / "lightning_logs" / "version_0" / "config.yaml"
    assert run_cli("fit", "--config", str(saved)) == 0
    assert teacher.stat().st_mtime_ns == made


def test_self_training_hands_its_callbacks_to_the_teachers_fit(tmp_path):
    # `sentiment fit --self_training` hands the teacher its CpuThreads: the teacher shares the machine as the student
    import lightning as L

    from sentiment.data.datamodule import SentimentDataModule
    from sentiment.training.selftrain import self_train

    data_dir = tmp_path / "data"
    build_archive_with_unlabelled(data_dir, 40)
    dm = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1},
                             loader={"min_epoch_size": 0, "batch_size": 32})
    dm.prepare_data()
    model = SentimentClassifier(vocab_size=dm.vocab_size, bag_size=dm.bag_size, net={"hidden_dim": 8})
    steps = []

    class Count(L.Callback):
        def on_train_batch_end(self, *args):
            steps.append(torch.get_num_threads())

    from sentiment.training.callbacks import CpuThreads

    before = torch.get_num_threads()
    student_data = self_train(model, dm, {"max_steps": 3, "enable_progress_bar": False}, seed=1,
                              callbacks=[CpuThreads(threads=1), Count()])
    assert steps == [1, 1, 1] and torch.get_num_threads() == before
    assert student_data.unlabelled.pseudo_labels is not None


def test_self_training_refuses_another_teacher_and_several_devices(tmp_path, capsys):
    data_dir = tmp_path / "data"
    build_archive_with_unlabelled(data_dir, 4)
    for extra, message in ((["--data.unlabelled.pseudo_labels", "best.ckpt"],
                            "best.ckpt: self-training labels the unlabelled reviews with a teacher of its own"),
                           (["--trainer.num_nodes", "2"], "run it with one device on one node")):
        assert run_cli("fit", "--self_training", "true", "--data.data_dir", str(data_dir), *extra,
                       "--trainer.default_root_dir", str(tmp_path)) == 1
        assert message in capsys.readouterr().err
    assert not list(data_dir.glob(".sentiment_cache/*/teacher-*.ckpt"))


def test_overfit_overlay_learns_a_few_batches_by_heart(tmp_path, tiny_csv):
    configs = Path(__file__).resolve().parents[1] / "configs"
    assert run_cli("fit", "--config", str(configs / "imdb.yaml"), "--config", str(configs / "overfit.yaml"),
                   "--model.net.hidden_dim", "16", "--model.net.embed_dim", "16", "--model.lr", "0.01",
                   "--data.train_file", str(tiny_csv), "--data.data_dir", str(tmp_path / "data"),
                   "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false") == 0
    events = _events(tmp_path / "lightning_logs" / "version_0")
    assert events.Scalars("train/acc")[-1].value == 1.0


@pytest.mark.slow
def test_python_m_sentiment_and_the_console_command_show_help():
    for cmd in ([sys.executable, "-m", "sentiment", "fit", "--help"], ["sentiment", "fit", "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        assert "--data.encoding.truncation" in out and "--model.net.pooling" in out and "head_tail" in out


def test_top_level_help_lists_every_subcommand_in_whole_sentences(capsys):
    # a command naming its subcommand builds only that parser; the top level must still offer all of them, with
    # serve and export, which are not Trainer methods
    with pytest.raises(SystemExit) as exit_:
        cli_main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out.split("subcommands:", 1)[1].split("\n\n", 1)[0]
    described = re.findall(r"^  (\w+) +(.*?)(?=^  \w|\Z)", listed, flags=re.M | re.S)
    assert [name for name, _ in described] == ["fit", "validate", "test", "predict", "serve", "export"]
    for name, description in described:
        assert description.strip().endswith("."), (name, description)  # not cut mid-sentence


def test_a_subcommands_help_lists_what_it_uses_and_errors_come_first(capsys):
    with pytest.raises(SystemExit):
        cli_main(["predict", "--help"])
    help_ = capsys.readouterr().out
    for used in ("--ckpt_path", "--data.predict_file", "--prediction_writer.output_path", "--data.loader.charset",
                 "--trainer.precision"):
        assert f"  {used} " in help_, used
    for unused in ("--model.net.hidden_dim", "--model.lr", "--optimizer", "--lr_scheduler", "--trainer.max_epochs",
                   "--data.train_file", "--data.encoding.max_length", "--data.unlabelled.word_vectors"):
        assert unused not in help_, unused
    assert "The model comes from --ckpt_path" in help_
    headings = [line for line in help_.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert "Run inference on your data:" in headings  # Lightning's docstring, to its first sentence's end
    assert len(help_.splitlines()) < 400
    with pytest.raises(SystemExit):
        cli_main(["test", "--help"])
    help_ = capsys.readouterr().out
    assert "Score a trained model" in help_ and "--data.test_file" in help_ and "--model.net.pooling" not in help_
    assert "Perform one evaluation epoch over the test set:" in help_
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    help_ = capsys.readouterr().out  # fit keeps every option of the model and the Trainer
    assert "--model.net.pooling" in help_ and "--trainer.max_epochs" in help_ and "--optimizer" in help_
    assert "  prepared_vocab_size(data) --> model.vocab_size" in help_  # the links, named as a reader can follow
    with pytest.raises(SystemExit) as exit_:
        cli_main(["predict", "--no_such_option", "1"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.splitlines()
    assert len(error) <= 4 and "unrecognized arguments: --no_such_option" in error[-1]


class _Heard(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))


def test_the_readme_lightning_script_runs_without_warnings_of_ours(tmp_path, tiny_csv):
    import warnings

    import lightning as L

    from sentiment import SentimentClassifier, SentimentDataModule

    L.seed_everything(0)
    test = write_csv(tmp_path / "test.csv", [(t, y) for t, y in make_reviews(64, seed=3)])
    (tmp_path / "new.txt").write_text("brilliant superb fun\nawful dull waste\n")
    heard = _Heard()
    logging.getLogger("lightning.pytorch").addHandler(heard)  # Lightning's logger does not propagate to caplog
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # README's example, on a tiny corpus and a small network
        dm = SentimentDataModule(data_dir=str(tmp_path / "data"), train_file=str(tiny_csv), test_file=str(test),
                                 predict_file=str(tmp_path / "new.txt"), encoding={"min_freq": 1},
                                 loader={"batch_size": 32, "min_epoch_size": 0})
        dm.prepare_data()
        model = SentimentClassifier(vocab_size=dm.vocab_size, classes=dm.label_names, lr=0.01,
                                    net={"embed_dim": 16, "hidden_dim": 16})
        trainer = L.Trainer(max_epochs=6, accelerator="cpu", gradient_clip_val=1.0, default_root_dir=tmp_path,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, dm)
        val_acc = trainer.callback_metrics["val/acc"]
        (tested,) = trainer.test(model, dm)
        predictions = trainer.predict(model, dm)
    ours = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught
            if "/sentiment/" in w.filename or "configure_callbacks" in str(w.message)]
    logging.getLogger("lightning.pytorch").removeHandler(heard)
    # Lightning also warns through its log, at info level ("... will override existing callbacks ...")
    ours += [m for level, m in heard.messages if level >= logging.WARNING or "override" in m]
    assert ours == []
    assert val_acc > 0.9 and tested["test/acc"] > 0.9
    assert [a["label"] for p in predictions for a in p["answers"]] == ["positive", "negative"]
    assert model.predict(["awful dull waste"])[0]["label"] == "negative"


def test_seed_everything_makes_two_fits_identical(tmp_path, tiny_csv):
    def fit(name):
        assert run_cli("fit", "--data.train_file", str(tiny_csv), "--data.data_dir", str(tmp_path / "data"),
                       "--data.loader.min_epoch_size", "0",
                       "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8", "--model.net.word_dropout", "0.1",
                       "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / name),
                       "--trainer.enable_progress_bar", "false") == 0
        ckpt = torch.load(tmp_path / name / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt",
                          weights_only=True)
        return ckpt["state_dict"]

    first, second = fit("a"), fit("b")
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


def test_fit_resumes_from_last_in_the_same_run_folder(tmp_path, tiny_csv):
    # a constant learning rate: a one-cycle schedule is planned for the run's length and cannot be extended
    common = ["--data.train_file", str(tiny_csv), "--data.data_dir", str(tmp_path / "data"),
              "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8", "--model.lr_schedule", "constant",
              "--data.loader.min_epoch_size", "0", "--trainer.default_root_dir", str(tmp_path),
              "--trainer.enable_progress_bar", "false"]
    assert run_cli("fit", *common, "--trainer.max_epochs", "1") == 0
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    steps_per_epoch = torch.load(last, weights_only=True)["global_step"]
    assert run_cli("fit", *common, "--trainer.max_epochs", "2", "--ckpt_path", "last") == 0
    assert not (tmp_path / "lightning_logs" / "version_1").exists()  # the same run goes on
    assert torch.load(last, weights_only=True)["global_step"] == 2 * steps_per_epoch  # one more epoch, not two


def test_resume_without_a_previous_run_is_a_clear_error(tmp_path, capsys):
    assert run_cli("fit", "--ckpt_path", "last", "--trainer.default_root_dir", str(tmp_path)) == 1
    assert "no lightning_logs/version_*/checkpoints/last.ckpt" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("shared", [True, False], ids=["one-shared-data-folder", "a-data-folder-each"])
def test_two_nodes_on_loopback_train_one_model_that_predicts(tmp_path, tiny_csv, shared):
    # as README tells users with several machines: the same command on each, with MASTER_ADDR, MASTER_PORT and
    # NODE_RANK set; here two "machines" of one process each, on loopback, each working in its own folder, both
    # preparing the data at once: into one shared data folder, or each into its own, as hosts without a shared disk
    # do (the same cache, byte for byte). DDP on one machine, `--trainer.devices 2`, runs in the benchmark's quick pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = []
    for rank in (0, 1):
        node = tmp_path / f"node{rank}"
        node.mkdir()
        nodes.append(subprocess.Popen(
            ["sentiment", "fit", "--data.train_file", str(tiny_csv),
             "--data.data_dir", str(tmp_path / ("data" if shared or rank == 0 else "data1")),
             "--data.loader.min_epoch_size", "3000", "--data.encoding.min_freq", "1", "--model.lr", "0.01",
             "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8",
             "--trainer.max_epochs", "2", "--trainer.strategy", "ddp", "--trainer.num_nodes", "2",
             "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"],
            cwd=node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                 "NODE_RANK": str(rank)}))
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    assert "Starting with 2 processes" in "".join(outputs[0])  # one run of two processes, not two runs
    assert "sync_dist" not in outputs[0][1]  # metrics are reduced over the processes
    caches = [list((tmp_path / folder / ".sentiment_cache").iterdir()) for folder in ("data", "data1")[:2 - shared]]
    assert [len(found) for found in caches] == [1] * len(caches)
    for name in ([] if shared else sorted(p.name for p in caches[0][0].iterdir())):
        assert (caches[0][0] / name).read_bytes() == (caches[1][0] / name).read_bytes(), name
    assert [p.name for p in (tmp_path / "node0" / "lightning_logs").iterdir()] == ["version_0"]
    assert not (tmp_path / "node1" / "lightning_logs").exists()  # the first node's first process saves and logs
    best = tmp_path / "node0" / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    from sentiment.inference.predictor import Predictor

    answers = Predictor.from_checkpoint(best).predict(["brilliant superb fun", "awful dull waste"])
    assert [a["label"] for a in answers] == ["positive", "negative"]


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind, message", [
    ("pickled", "refused: it holds pickled Python objects"),
    ("text", "not a PyTorch checkpoint"),
    ("empty", "not a PyTorch checkpoint (EOFError)"),
    ("no_state", "not a Lightning checkpoint (no state_dict)"),
    ("other_model", "not a sentiment checkpoint"),
])
def test_bad_checkpoints_are_refused_in_one_line(trained, tmp_path, capsys, kind, message):
    path = tmp_path / "bad.ckpt"
    marker = tmp_path / "code-ran"
    if kind == "pickled":
        checkpoint = torch.load(trained["best"], weights_only=True)
        checkpoint["payload"] = _RunsCode(marker)
        torch.save(checkpoint, path)
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no_state":
        torch.save({"epoch": 1}, path)
    else:
        torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 10}}, path)
    (tmp_path / "new.txt").write_text("great\n")
    code = run_cli("predict", "--ckpt_path", str(path), "--data.predict_file", str(tmp_path / "new.txt"),
                   "--prediction_writer.output_path", str(tmp_path / "out.csv"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith(f"error: {path}: {message}")
    assert not marker.exists() and not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("subcommand, option, what", [
    ("predict", "--prediction_writer.output_path", "predictions"),
    ("fit", "--trainer.default_root_dir", "logs and checkpoints"),
    ("fit", "--data.data_dir", "the data cache"),
])
def test_unwritable_output_folders_are_reported_before_any_work(trained, tmp_path, capsys, subcommand, option,
                                                                   what):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (tmp_path / "new.txt").write_text("great\n")
    args = {"predict": ["--ckpt_path", str(trained["best"]), "--data.predict_file", str(tmp_path / "new.txt")],
            "fit": ["--data.train_file", str(trained["test"]), "--trainer.default_root_dir", str(tmp_path)]}
    assert run_cli(subcommand, *args[subcommand], option, str(blocker / "inside" / "x.csv")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {blocker / 'inside'}") and f"cannot write {what} there" in err


def test_a_checkpoint_tests_a_new_file_from_any_folder_without_its_training_data(tmp_path, monkeypatch):
    # trained in one folder with relative paths; scored from another with the checkpoint and a test file only
    trained_in, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    trained_in.mkdir()
    elsewhere.mkdir()
    write_csv(trained_in / "my_train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(300)])
    rows = [(t, "pos" if y else "neg") for t, y in make_reviews(60, seed=9)]
    write_csv(trained_in / "my_test.csv", rows)
    write_csv(elsewhere / "new.csv", [(t, "neg" if y == "pos" else "pos") for t, y in rows])  # every label flipped
    monkeypatch.chdir(trained_in)
    common = ["--data.encoding.min_freq", "1", "--trainer.enable_progress_bar", "false"]
    assert run_cli("fit", "--data.train_file", "my_train.csv", "--data.loader.min_epoch_size", "0",
                   "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8", "--model.adversarial", "0",
                   "--trainer.max_epochs", "4", *common) == 0
    best = trained_in / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    assert run_cli("test", "--ckpt_path", str(best), "--data.test_file", "my_test.csv",
                   "--trainer.default_root_dir", "here", *common) == 0
    (at_home,) = [e.value for e in _events(trained_in / "here" / "lightning_logs" / "version_0").Scalars("test/acc")]
    (trained_in / "my_train.csv").unlink()  # the training data is gone: testing needs none of it
    monkeypatch.chdir(elsewhere)
    for extra in ([], ["--data.train_file", str(trained_in / "my_train.csv")]):  # an absolute path: no matter
        root = elsewhere / f"run{len(extra)}"
        assert run_cli("test", "--ckpt_path", str(best), "--data.test_file", "new.csv",
                       "--trainer.default_root_dir", str(root), *extra) == 0
        (flipped,) = [e.value for e in _events(root / "lightning_logs" / "version_0").Scalars("test/acc")]
        assert at_home > 0.8 and flipped == pytest.approx(1 - at_home, abs=1e-6)  # the same reviews, read alike
    assert not list(elsewhere.glob("data/*"))  # nothing was cached or downloaded for it


def _flipped(n: int, seed: int, extra: str = "") -> list[tuple[str, str]]:
    """Reviews whose labels say the opposite of their words: data of another kind, which a model must learn."""
    return [(f"{text} {extra}".strip(), "negative" if y else "positive") for text, y in make_reviews(n, seed=seed)]


def test_fit_init_from_trains_a_model_further_on_new_data(trained, tmp_path):
    # starts from the checkpoint's weights, vocabulary, bag and label set, and learns the new data's meaning
    train = write_csv(tmp_path / "new.csv", _flipped(300, seed=11, extra="zzznewword"))
    test = write_csv(tmp_path / "new_test.csv", _flipped(80, seed=12))
    before = Predictor.from_checkpoint(trained["best"])
    assert run_cli("fit", "--init_from", str(trained["best"]), "--data.train_file", str(train),
                   "--data.test_file", str(test), "--data.data_dir", str(tmp_path / "data"),
                   "--data.loader.min_epoch_size", "0", "--model.lr", "0.01", "--model.adversarial", "0",
                   "--trainer.max_epochs", "6", "--trainer.default_root_dir", str(tmp_path),
                   "--trainer.enable_progress_bar", "false") == 0
    best = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    after = Predictor.from_checkpoint(best)
    assert after.encoder.vocab == before.encoder.vocab  # the new word got no id of its own: it reads as unknown
    assert "zzznewword" not in after.encoder.vocab.stoi and after.labels == before.labels
    assert after.net.config == before.net.config
    assert not list((tmp_path / "data").glob(".sentiment_cache/*"))  # read as the model reads: no cache of its own
    texts, labels = zip(*_flipped(80, seed=12))
    right = lambda predictor: sum(a["label"] == y for a, y in zip(predictor.predict(list(texts)), labels)) / 80
    assert right(before) < 0.2 and right(after) > 0.8
    # `sentiment test` of the new model reads its test file as it was trained
    assert run_cli("test", "--ckpt_path", str(best), "--trainer.default_root_dir", str(tmp_path / "t")) == 0
    (acc,) = [e.value for e in _events(tmp_path / "t" / "lightning_logs" / "version_0").Scalars("test/acc")]
    assert acc == pytest.approx(right(after), abs=1e-6)


def test_init_from_starts_from_the_checkpoints_weights_in_python(trained, tmp_path):
    import lightning as L

    from sentiment.data.datamodule import SentimentDataModule

    model = SentimentClassifier.load_from_checkpoint(trained["best"])
    start = {k: v.clone() for k, v in model.net.state_dict().items()}
    data = SentimentDataModule(train_file=str(write_csv(tmp_path / "new.csv", _flipped(100, seed=3))),
                               data_dir=str(tmp_path / "data"), loader={"min_epoch_size": 0})
    data.read_as(model.text_encoder, model.labels)
    model.hparams.lr = 1e-12  # one step that changes nothing: what training starts from is the checkpoint's
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=data)
    for key, value in model.net.state_dict().items():
        torch.testing.assert_close(value, start[key], atol=1e-6, rtol=0, msg=key)


def test_init_from_refuses_a_label_outside_the_models_set_and_a_different_network(trained, tmp_path, capsys):
    rows = _flipped(40, seed=4)
    rows[7] = ("a mixed bag of a film", "mixed")
    bad = write_csv(tmp_path / "bad.csv", rows)
    common = ["--init_from", str(trained["best"]), "--data.data_dir", str(tmp_path / "data"),
              "--trainer.default_root_dir", str(tmp_path)]
    assert run_cli("fit", "--data.train_file", str(bad), *common) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {bad}: row 8: label 'mixed' is not one of the labels negative, positive")
    assert not list(tmp_path.glob("lightning_logs/*/checkpoints/*.ckpt"))
    good = write_csv(tmp_path / "good.csv", _flipped(40, seed=4))
    assert run_cli("fit", "--data.train_file", str(good), "--model.net.hidden_dim", "32", *common) == 1
    assert "the network is the checkpoint's; leave out --model.net.hidden_dim" in capsys.readouterr().err
    assert run_cli("fit", "--data.train_file", str(good), "--data.encoding.max_length", "7", *common) == 1
    assert "max_length 7 (the checkpoint's: 128)" in capsys.readouterr().err


def test_an_imdb_model_tests_a_new_file_without_imdb_at_hand(tmp_path, monkeypatch):
    # trained on IMDb's archive; scoring it on a file elsewhere needs neither the archive nor a download
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    build_imdb_archive(data_dir / "aclImdb_v1.tar.gz", n_train=200, n_test=10)
    assert run_cli("fit", "--data.data_dir", str(data_dir), "--data.encoding.min_freq", "1",
                   "--data.loader.min_epoch_size", "0", "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8",
                   "--model.adversarial", "0", "--trainer.max_epochs", "1", "--trainer.default_root_dir",
                   str(tmp_path), "--trainer.enable_progress_bar", "false") == 0
    best = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    write_csv(elsewhere / "new.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(40, seed=3)])
    assert run_cli("test", "--ckpt_path", str(best), "--data.test_file", "new.csv", "--data.data_dir", "nothing",
                   "--data.imdb.url", "http://127.0.0.1:9/none.tar.gz", "--trainer.enable_progress_bar", "false") == 0
    assert not (elsewhere / "nothing").exists() or not list((elsewhere / "nothing").iterdir())


def _threads_of_a_fit(tmp_path: Path, name: str, tiny_csv: Path, *options: str, env: dict | None = None
                      ) -> list[int]:
    data_dir = tmp_path / name
    tests = Path(__file__).resolve().parent
    subprocess.run(["sentiment", "fit", "--data.train_file", str(tiny_csv), "--data.data_dir", str(data_dir),
                    "--model.net.hidden_dim", "16", "--model.net.embed_dim", "16", "--trainer.max_steps", "80",
                    "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(data_dir),
                    "--trainer.enable_progress_bar", "false", "--trainer.callbacks+=conftest.RecordThreads",
                    "--cpu.interval", "0.3", *options], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(tests), **(env or {})})
    return [int(line) for line in (data_dir / "threads.txt").read_text().split()]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) != 2, reason="measured on two cores")
def test_a_fit_beside_a_busy_process_computes_with_the_core_it_leaves(tmp_path, tiny_csv):
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        beside = _threads_of_a_fit(tmp_path, "beside", tiny_csv)
        chosen = _threads_of_a_fit(tmp_path, "chosen", tiny_csv, env={"OMP_NUM_THREADS": "2"})
        fixed = _threads_of_a_fit(tmp_path, "fixed", tiny_csv, "--cpu.threads", "1")
    finally:
        busy.kill()
    alone = _threads_of_a_fit(tmp_path, "alone", tiny_csv)
    # from its first step, the busy process keeping a core since the fit began; a shared host may deschedule it for a
    # moment, which a reading every 0.3 s sees as a free core
    assert beside[0] == 1 and beside.count(1) >= 0.9 * len(beside), beside
    assert set(chosen) == {2} and set(fixed) == {1}  # a number the user gave wins
    assert set(alone) == {2}


def test_a_fits_config_yaml_runs_validate_test_and_predict(trained, tmp_path, capsys):
    # LightningCLI's way: the config a fit saved, reused with the checkpoint; its fit-only settings are set aside
    saved = trained["root"] / "lightning_logs" / "version_0" / "config.yaml"
    assert "verbose" not in yaml.safe_load(saved.read_text())  # --verbose is the command's, not a setting
    capsys.readouterr()
    assert run_cli("test", "--config", str(saved), "--ckpt_path", str(trained["best"]),
                   "--trainer.default_root_dir", str(tmp_path / "t")) == 0
    assert "test/acc" in capsys.readouterr().out  # the scores are printed, as test does
    assert run_cli("validate", "--config", str(saved), "--ckpt_path", str(trained["best"]),
                   "--trainer.default_root_dir", str(tmp_path / "v")) == 0
    assert "val/acc" in capsys.readouterr().out
    texts = tmp_path / "texts.txt"
    texts.write_text("a wonderful film\nawful and boring\n")
    assert run_cli("predict", "--config", str(saved), "--ckpt_path", str(trained["best"]), "--data.predict_file",
                   str(texts), "--prediction_writer.output_path", str(tmp_path / "p.csv")) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 3
