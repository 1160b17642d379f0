"""Everything after training: the Predictor, the one checkpoint read, the ONNX export, and what they import."""

import ast
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from sentiment.training.classifier import SentimentClassifier
from sentiment.inference.predictor import Predictor

PACKAGE = Path(__file__).resolve().parents[1] / "sentiment"
REVIEWS = ["A wonderful, brilliant film.", "", "Terrible and boring, a waste.", "superb fun",
           "the plot was dull " * 60 + "but the ending was brilliant", "awful"]


def _loaded(code: str) -> list[str]:
    """The heavy companions of Lightning that ``code``, run in a fresh interpreter, leaves in sys.modules."""
    probe = (f"import sys; {code}; print(sorted({{m.split('.')[0] for m in sys.modules}} & "
             "{'lightning', 'pytorch_lightning', 'torchmetrics', 'tensorboard', 'sentiment.cli'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().replace("'", '"'))


def test_the_predictor_and_the_server_load_no_lightning():
    assert _loaded("import sentiment.inference.predictor, sentiment.inference.checkpoint, "
                   "sentiment.inference.export") == []
    assert _loaded("import sentiment.inference.serve") == []
    code = "import sys, sentiment.inference.serve; print('sentiment.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the server never imports the command line


def _imports(module: Path) -> set[str]:
    """The package's own modules that ``module`` imports (``inference.serve``), at any depth of its code, by an import
    statement or by name (``importlib.import_module("sentiment.inference.serve")``)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "sentiment":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sentiment."):
            found.add(node.module.removeprefix("sentiment."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("sentiment.") for a in node.names if a.name.startswith("sentiment.")}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("sentiment."):
            found.add(node.value.removeprefix("sentiment."))
    return found


def test_the_package_has_no_import_circle():
    graph = {".".join(p.relative_to(PACKAGE).with_suffix("").parts): _imports(p) for p in PACKAGE.rglob("*.py")}
    assert {"inference.checkpoint", "inference.serve", "inference.export"} <= graph["cli"]  # every kind of import

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m, {m})] == []


def test_the_predictor_reads_the_weights_lightning_would_load(trained, tmp_path):
    # the Predictor rebuilds the network from the checkpoint by itself; Lightning's own loader is the reference
    checkpoint = torch.load(trained["best"], weights_only=True)
    checkpoint["calibration"]["temperature"] = 2.5  # as if validation had fitted one
    torch.save(checkpoint, tmp_path / "calibrated.ckpt")
    predictor = Predictor.from_checkpoint(tmp_path / "calibrated.ckpt", compute="float32")
    model = SentimentClassifier.load_from_checkpoint(tmp_path / "calibrated.ckpt", map_location="cpu").eval()
    inputs = predictor.encoder.model_inputs(REVIEWS)
    assert model.temperature == predictor.temperature == 2.5
    with torch.no_grad():
        expected = torch.sigmoid(model.net(**inputs) / model.temperature)
    answers = predictor.predict(REVIEWS)
    got = [a["scores"]["positive"] for a in answers]
    assert got == pytest.approx(expected.tolist(), abs=1e-6)
    assert len({round(s, 3) for s in got}) > 3  # a trained model: the scores differ
    assert [a["label"] for a in answers] == ["positive" if s >= 0.5 else "negative" for s in got]
    assert [a["score"] for a in answers] == pytest.approx([max(s, 1 - s) for s in got], abs=1e-6)


def test_stream_answers_as_it_reads_and_keeps_order(trained):
    predictor = Predictor.from_checkpoint(trained["best"], batch_size=4)
    read = []

    def lines():
        for i in range(1000):
            read.append(i)
            yield REVIEWS[i % len(REVIEWS)]

    answers = predictor.stream(lines())
    first = next(answers)
    assert 4 <= len(read) <= 4 * (predictor.threads + 1)  # a batch for each worker and one more, not the input
    rest = list(answers)
    assert len(rest) == 999 and len(read) == 1000
    alone = predictor.predict(REVIEWS)
    assert [a["score"] for a in [first, *rest][: 2 * len(REVIEWS)]] == pytest.approx(
        [a["score"] for a in alone] * 2, abs=1e-6)


def test_predict_reads_the_checkpoint_once(trained, tmp_path, monkeypatch):
    reads = []
    real = torch.load

    def counted(f, *args, **kwargs):
        reads.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    (tmp_path / "new.txt").write_text("superb fun\nawful\n")
    assert run_cli("predict", "--ckpt_path", str(trained["best"]), "--data.predict_file", str(tmp_path / "new.txt"),
                   "--prediction_writer.output_path", str(tmp_path / "out.csv"),
                   "--trainer.enable_progress_bar", "false") == 0
    assert reads == [str(trained["best"])]
    assert [r["label"] for r in csv.DictReader(open(tmp_path / "out.csv"))] == ["positive", "negative"]


def test_the_onnx_export_runs_in_onnxruntime_to_the_same_scores(trained, tmp_path, capsys):
    import onnxruntime as ort

    from sentiment.data.text import TextEncoder

    out = tmp_path / "model.onnx"
    assert run_cli("export", "--ckpt_path", str(trained["best"]), "--output", str(out)) == 0
    assert capsys.readouterr().out.startswith(f"Wrote {out} (")
    # README's example: the vocabulary, tokenizer settings and labels come from the model's metadata
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    encoder, labels = TextEncoder.from_dict(json.loads(meta["text_encoder"])), json.loads(meta["labels"])
    predictor = Predictor.from_checkpoint(trained["best"], compute="float32")
    assert encoder == predictor.encoder and labels == ["negative", "positive"]
    assert (json.loads(meta["max_length"]), json.loads(meta["truncation"])) == (128, "head_tail")
    for batch in (REVIEWS, REVIEWS[3:4], REVIEWS * 7):  # other batch sizes and lengths than the export's example
        (probabilities,) = session.run(None, {k: v.numpy() for k, v in encoder.model_inputs(batch).items()})
        expected = [list(a["scores"].values()) for a in predictor.predict(batch)]
        np.testing.assert_allclose(probabilities, expected, atol=1e-4)
        np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)


def test_an_export_that_fails_leaves_no_file(tmp_path, capsys):
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    assert run_cli("export", "--ckpt_path", str(tmp_path / "bad.ckpt"), "--output", str(tmp_path / "m.onnx")) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'bad.ckpt'}: not a PyTorch checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]


def test_batches_on_worker_threads_give_the_answers_of_one_batch_at_a_time_and_leave_torch_threads_alone(trained):
    import threading

    texts = [REVIEWS[i % len(REVIEWS)] + " film" * (i % 7) for i in range(50)]
    alone = Predictor.from_checkpoint(trained["best"], compute="float32", batch_size=8, threads=1).predict(texts)
    before = torch.get_num_threads()
    workers = Predictor.from_checkpoint(trained["best"], compute="float32", batch_size=8, threads=3)
    together = workers.predict(texts)
    assert [a["score"] for a in together] == pytest.approx([a["score"] for a in alone], abs=1e-6)
    assert [a["label"] for a in together] == [a["label"] for a in alone]
    # each worker reads with one torch thread; this thread, and threads started later, keep torch's count
    assert set(workers._workers().map(lambda _: torch.get_num_threads(), range(6))) == {1}
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert torch.get_num_threads() == before and seen == [before]


def _calibrated_model(trained, tmp_path, temperature: float) -> SentimentClassifier:
    """The tiny trained model as ``load_from_checkpoint`` gives it, with a calibrating temperature of its own."""
    checkpoint = torch.load(trained["best"], weights_only=True)
    checkpoint["calibration"]["temperature"] = temperature
    torch.save(checkpoint, tmp_path / "calibrated.ckpt")
    return SentimentClassifier.load_from_checkpoint(tmp_path / "calibrated.ckpt", map_location="cpu")


def test_validating_a_trained_model_changes_nothing_of_it(trained, tmp_path):
    import lightning as L

    from sentiment.data.datamodule import SentimentDataModule

    model = _calibrated_model(trained, tmp_path, 2.5)  # as if fitting had found 2.5; validation data would give another
    before = model.predict(REVIEWS)
    dm = SentimentDataModule(data_dir=str(trained["root"] / "data"), train_file=str(trained["root"] / "train.csv"),
                             encoding={"min_freq": 1}, loader={"batch_size": 32})
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, precision="32-true",
                        accelerator="cpu")
    (metrics,) = trainer.validate(model, datamodule=dm, verbose=False)
    assert metrics["val/acc"] > 0.8 and "val/ece" in metrics  # it did measure calibration
    assert sorted(metrics) == sorted(k for k in metrics if k.startswith("val/"))  # each once, not as hp/ copies
    assert model.temperature == 2.5 and model.predict(REVIEWS) == before


def test_a_plain_loader_of_texts_predicts(trained, tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    model = _calibrated_model(trained, tmp_path, 1.0)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, precision="32-true",
                        accelerator="cpu")
    batches = trainer.predict(model, dataloaders=DataLoader(REVIEWS, batch_size=2))
    answers = [answer for batch in batches for answer in batch]
    expected = model.predictor(compute="float32").predict(REVIEWS)  # the Trainer's precision: 32-true
    assert [a["label"] for a in answers] == [a["label"] for a in expected]
    assert [a["score"] for a in answers] == pytest.approx([a["score"] for a in expected], abs=1e-5)


def test_a_compiled_model_trains_the_default_recipe_and_its_checkpoint_reads_as_always(tmp_path, monkeypatch):
    # torch.compile(model), as Lightning documents it: the network compiles; metrics, logging and the adversarial
    # step (whose kept gradient PyTorch's compiled backward cannot keep) run as written
    import lightning as L
    from conftest import make_reviews, write_csv

    from sentiment.data.datamodule import SentimentDataModule
    from sentiment.errors import DataError

    # the compiler's own cache does not key on ATEN_CPU_CAPABILITY: kernels of another run could be reused wrongly
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    train = write_csv(tmp_path / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(200)])
    dm = SentimentDataModule(train_file=str(train), data_dir=str(tmp_path / "data"), encoding={"min_freq": 1},
                             loader={"min_epoch_size": 0, "batch_size": 32})
    dm.prepare_data()
    model = SentimentClassifier(vocab_size=dm.vocab_size, bag_size=dm.bag_size, net={"hidden_dim": 16})
    assert model.hparams.adversarial > 0 and model.hparams.adversarial_every == 2  # the default recipe
    trainer = L.Trainer(max_steps=4, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, precision="32-true")
    trainer.fit(torch.compile(model), datamodule=dm)
    assert trainer.global_step == 4 and "train/adversarial_loss" in trainer.callback_metrics
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    expected = model.predictor(compute="float32").predict(REVIEWS)
    read = Predictor.from_checkpoint(tmp_path / "compiled.ckpt", compute="float32").predict(REVIEWS)
    assert [a["score"] for a in read] == pytest.approx([a["score"] for a in expected], abs=1e-5)
    model.net = torch.compile(model.net)  # a wrapper that renames every weight in checkpoints: refused in one line
    with pytest.raises(DataError, match=r"compile it in place \(model.net.compile\(\)\)"):
        L.Trainer(max_steps=1, logger=False, enable_progress_bar=False).fit(model, datamodule=dm)


def test_the_learning_rate_finder_suggests_a_usable_rate_for_the_default_recipe(tmp_path):
    # the adversarial loss on every other step must not make the finder's curve jagged: the value Lightning reads
    # from each step is the clean loss, and training still follows the gradient of both losses
    import lightning as L
    from conftest import make_reviews, write_csv
    from lightning.pytorch.tuner import Tuner

    from sentiment.data.datamodule import SentimentDataModule
    from sentiment.network.model import adversarial_losses

    train = write_csv(tmp_path / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(400)])
    dm = SentimentDataModule(train_file=str(train), data_dir=str(tmp_path / "data"), encoding={"min_freq": 1},
                             loader={"min_epoch_size": 3200, "batch_size": 32})
    dm.prepare_data()
    torch.manual_seed(0)
    model = SentimentClassifier(vocab_size=dm.vocab_size, bag_size=dm.bag_size, net={"hidden_dim": 16})
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, precision="32-true", gradient_clip_val=1.0)
    Tuner(trainer).lr_find(model, datamodule=dm)
    assert 1e-5 <= model.hparams.lr <= 3e-2  # the old curve gave 8e-8 here; the recipe's own rate is 4e-3

    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model = SentimentClassifier(vocab_size=dm.vocab_size, bag_size=dm.bag_size, net={"hidden_dim": 16})
    torch.manual_seed(1)  # the same dropout in both
    returned = model.training_step(batch, 0)  # step 0: an adversarial step
    torch.manual_seed(1)
    clean, shifted, _ = adversarial_losses(model.net, batch["input_ids"], batch["lengths"], batch["labels"],
                                           model.hparams.adversarial, 0.0, None, batch.get("bag_ids"))
    assert returned.item() == pytest.approx(clean.item(), abs=1e-6)
    got = torch.autograd.grad(returned, model.net.embedding.weight)[0]
    want = torch.autograd.grad(clean + shifted, model.net.embedding.weight)[0]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("per_batch", [0, 8])
def test_the_batch_size_finder_scales_the_labelled_batches_and_checkpoints_keep_the_size(tmp_path, per_batch):
    import lightning as L
    from conftest import make_reviews, write_csv
    from lightning.pytorch.tuner import Tuner

    from sentiment.data.datamodule import SentimentDataModule

    train = write_csv(tmp_path / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(300)])
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("\n".join(t for t, _ in make_reviews(100)))
    dm = SentimentDataModule(train_file=str(train), data_dir=str(tmp_path / "data"), encoding={"min_freq": 1},
                             unlabelled={"per_batch": per_batch, "file": str(unlabelled)},
                             loader={"batch_size": 32, "min_epoch_size": 0})
    dm.prepare_data()
    model = SentimentClassifier(vocab_size=dm.vocab_size, bag_size=dm.bag_size, net={"hidden_dim": 8})
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    # no out-of-memory on a CPU: each of the three trials doubles the size, 16 -> 32 -> 64
    assert Tuner(trainer).scale_batch_size(model, datamodule=dm, init_val=16, max_trials=3) == 64
    assert dm.batch_size == dm.loader.batch_size == dm.hparams["loader"]["batch_size"] == 64
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    if per_batch:  # the unlabelled reviews beside each batch keep their own number
        batch, _, _ = batch  # a CombinedLoader's: the batch, its index, the loader's index
        assert len(batch["labelled"]["labels"]) == 64 and len(batch["unlabelled"]["lengths"]) == per_batch
    else:
        assert len(batch["labels"]) == 64
    L.Trainer(max_steps=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(model, dm)
    saved = torch.load(next(tmp_path.glob("**/*.ckpt")), weights_only=True)
    assert saved["datamodule_hyper_parameters"]["loader"]["batch_size"] == 64


def test_cpu_threads_in_a_python_fit_fixes_its_threads_and_leaves_the_process_as_found(tmp_path):
    import lightning as L
    from conftest import make_reviews, write_csv

    from sentiment.data.datamodule import SentimentDataModule
    from sentiment.training.callbacks import CpuThreads

    class Seen(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            seen.add(torch.get_num_threads())

    seen: set[int] = set()
    train = write_csv(tmp_path / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(100)])
    dm = SentimentDataModule(train_file=str(train), data_dir=str(tmp_path / "data"), encoding={"min_freq": 1},
                             loader={"min_epoch_size": 0, "batch_size": 32})
    dm.prepare_data()
    model = SentimentClassifier(vocab_size=dm.vocab_size, bag_size=dm.bag_size, net={"hidden_dim": 8})
    before = torch.get_num_threads()
    torch.set_num_threads(before + 1)  # a number of this process's own, not the fit's
    try:
        L.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, callbacks=[CpuThreads(threads=1), Seen()]).fit(model, datamodule=dm)
        assert seen == {1} and torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)
