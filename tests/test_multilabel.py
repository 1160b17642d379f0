"""Several labels per text: label cells, JSONL lists and fastText lines read as sets; the split, the bag's ratios per
label, thresholds chosen for F1, the multilabel metrics; a fit end to end, its checkpoint, predictions, the API, the
server, the export; and single-label files that merely look like sets."""

import csv
import json
import random
import warnings

import numpy as np
import pytest
import torch
from conftest import FILLER, run_cli, write_csv

from sentiment.data.bag import log_count_ratios
from sentiment.data.corpus import stratified_split
from sentiment.data.datamodule import SentimentDataModule
from sentiment.data.labels import LabelReader, cells
from sentiment.data.sources import read_labelled
from sentiment.errors import DataError
from sentiment.inference.predictor import Predictor
from sentiment.training.calibration import best_thresholds
from sentiment.training.metrics import ExampleJaccard

# each label has its words; a text has any subset of the labels (none too), and a word of each
TAGS = {"acting": ["actor", "performance", "cast", "role"], "music": ["score", "soundtrack", "song", "melody"],
        "plot": ["story", "twist", "ending", "script"]}


def make_tagged(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        tags = [t for t in TAGS if rng.random() < 0.4] if i % 7 else []
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 20))]
        for tag in tags:
            for _ in range(2):
                words.insert(rng.randrange(len(words) + 1), rng.choice(TAGS[tag]))
        rows.append((" ".join(words), ";".join(tags)))
    return rows


def test_a_label_cell_is_a_set_split_at_the_separator():
    assert cells("joy; love;;", ";") == ["joy", "love"]
    assert cells("", ";") == [] and cells(None, ";") == []
    assert cells(["joy", " pride "], ";") == ["joy", "pride"]  # a JSON list
    assert cells("joy|love", "|") == ["joy", "love"]


def test_label_sets_read_as_rows_of_zeros_and_ones_and_name_what_falls_outside():
    values = ["plot;acting", "", "music", ["plot"]]
    reader = LabelReader.from_training(values, separator=";")
    assert reader.labels == ("acting", "music", "plot")  # alphabetically
    rows = reader.read_sets(values, ";", "train.csv", ["row 1", "row 2", "row 3", "row 4"])
    assert rows.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(DataError, match=r"^val.csv: row 2: label 'sound' is not one of the labels acting, music, "
                                        r"plot$"):
        reader.read_sets(["music", "plot;sound"], ";", "val.csv", ["row 1", "row 2"])


def test_jsonl_lists_and_fasttext_lines_with_several_labels_are_sets(tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"text": "a", "label": ["joy", "love"]}\n{"text": "b", "label": []}\n'
                     '{"text": "c", "label": "joy"}\n')
    assert read_labelled(jsonl).labels == [["joy", "love"], [], "joy"]
    txt = tmp_path / "train.txt"
    txt.write_text("__label__joy __label__love so happy\n__label__anger  grr\n__label__joy __label__joy yay\n")
    reviews = read_labelled(txt)
    assert reviews.labels == [["joy", "love"], "anger", "joy"] and reviews.texts[0] == "so happy"
    reader = LabelReader.from_training(reviews.labels, separator=";")
    assert reader.read_sets(reviews.labels, ";", "t", reviews.where).tolist() == [[0, 1, 1], [1, 0, 0], [0, 1, 0]]


def test_several_labels_without_the_setting_are_refused_in_one_line_naming_it(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("__label__joy good\n__label__anger bad\n__label__joy __label__love very good\n" * 4)
    assert run_cli("fit", "--data.train_file", str(train), "--data.data_dir", str(tmp_path / "d"),
                   "--trainer.default_root_dir", str(tmp_path), "--trainer.fast_dev_run", "true") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"error: {train}: line 3: several labels (joy, love); to train several labels per text, set "
                   "--data.encoding.multi_label true")


def test_a_cell_that_looks_like_several_labels_warns_once_naming_the_setting(tmp_path):
    rows = [("good film", "positive"), ("funny film", "positive,funny"), ("bad", "negative"), ("sad", "negative;x")]
    train = write_csv(tmp_path / "train.csv", rows * 3)
    dm = SentimentDataModule(data_dir=str(tmp_path / "d"), train_file=str(train), encoding={"val_fraction": 0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.prepare_data()
    said = [str(w.message) for w in caught if "several labels" in str(w.message)]
    assert said == [f"{train}: row 2: label 'positive,funny' looks like several labels; it is read as one class of "
                    "its own (several labels per text: --data.encoding.multi_label true)"]
    assert dm.label_names == ["negative", "negative;x", "positive", "positive,funny"]  # today's meaning, kept


def test_the_validation_split_of_label_sets_is_a_seeded_share():
    rows = np.random.default_rng(0).integers(0, 2, size=(200, 5)).astype(np.uint8)
    val, train = stratified_split(rows, 0.1, seed=3)
    assert len(val) == 20 and len(train) == 180 and not set(val) & set(train)
    again, _ = stratified_split(rows, 0.1, seed=3)
    other, _ = stratified_split(rows, 0.1, seed=4)
    assert again.tolist() == val.tolist() and other.tolist() != val.tolist()


def test_the_bag_ratios_of_label_sets_are_one_against_the_rest_per_label():
    # n-gram 1 only in texts of label 0, n-gram 2 only in texts of label 1, n-gram 3 everywhere
    sets = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.uint8)
    bags = [[1, 3], [1, 3], [1, 2, 3], [2, 3], [3]]
    ratios = log_count_ratios(np.array([i for b in bags for i in b]), np.array([len(b) for b in bags]), sets, 3, 2)
    assert ratios.shape == (4, 2) and ratios[0].tolist() == [0, 0]
    assert ratios[1, 0] > 0 > ratios[1, 1]  # speaks for label 0, against label 1
    assert ratios[2, 1] > 0 > ratios[2, 0]
    assert ratios[1, 0] > ratios[3, 0]  # present everywhere: less telling than an n-gram of the label alone
    # label 0 against the rest, by hand: each n-gram in how many of its three texts, smoothed by one
    p = np.array([3, 1, 3]) + 1.0
    q = np.array([0, 1, 2]) + 1.0  # and in the other two texts
    assert ratios[1:, 0] == pytest.approx(np.log(p / p.sum()) - np.log(q / q.sum()), rel=1e-5)


def test_each_label_threshold_gives_its_best_f1():
    rng = np.random.default_rng(1)
    truth = rng.random((300, 4)) < np.array([0.5, 0.2, 0.05, 0.0])
    targets = torch.from_numpy(truth)
    probs = torch.from_numpy(truth * 0.3 + rng.random((300, 4)) * 0.7).float()
    thresholds = best_thresholds(probs, targets)

    def f1(k, t):
        answered = probs[:, k] >= t
        tp = int((answered & targets[:, k]).sum())
        return 2 * tp / max(1, int(answered.sum()) + int(targets[:, k].sum()))

    for k in range(3):
        best = max(f1(k, float(t)) for t in probs[:, k])  # every cut there is
        assert f1(k, float(thresholds[k])) == pytest.approx(best)
        assert f1(k, float(thresholds[k])) > f1(k, 0.5)  # not the default's
    assert thresholds[3] == 0.5  # no text has the label: nothing to choose by


def test_example_based_jaccard_is_the_mean_over_texts_with_empty_sets_agreeing():
    metric = ExampleJaccard()
    preds = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    truth = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1]])
    metric.update(preds[:2], truth[:2])
    metric.update(preds[2:], truth[2:])
    assert float(metric.compute()) == pytest.approx((0.5 + 1 + 0 + 0) / 4)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """A tiny multi-label corpus (three tags, any number per text), fitted with the default recipe's command."""
    root = tmp_path_factory.mktemp("tagged")
    train = write_csv(root / "train.csv", make_tagged(900), header=("text", "labels"))
    test = write_csv(root / "test.csv", make_tagged(120, seed=5), header=("text", "labels"))
    assert run_cli("fit", "--data.train_file", str(train), "--data.test_file", str(test), "--data.label_column",
                   "labels", "--data.encoding.multi_label", "true", "--data.data_dir", str(root / "data"),
                   "--data.encoding.min_freq", "1", "--data.loader.min_epoch_size", "0", "--model.net.hidden_dim", "16",
                   "--model.net.embed_dim", "16", "--model.adversarial", "0", "--trainer.max_epochs", "8",
                   "--trainer.log_every_n_steps", "5", "--trainer.enable_progress_bar", "false",
                   "--trainer.default_root_dir", str(root)) == 0
    return {"root": root, "best": root / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt", "test": test,
            "rows": make_tagged(120, seed=5)}


def test_a_multilabel_fit_logs_the_multilabel_metrics_and_keeps_the_best_macro_f1(tagged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tagged["root"] / "lightning_logs" / "version_0"))
    events.Reload()
    tags = events.Tags()
    assert {"val/f1", "val/f1_micro", "val/precision", "val/recall", "val/auroc", "val/jaccard", "val/subset_acc",
            "val/hamming", "val/f1/acting", "val/f1/music", "val/f1/plot", "train/f1",
            "hp/val_f1", "hp/val_jaccard"} <= set(tags["scalars"])
    assert "val/acc" not in tags["scalars"] and "val/ece" not in tags["scalars"]
    assert {"val/pr_curve/acting", "val/pr_curve/music", "val/pr_curve/plot"} <= set(tags["tensors"])
    f1 = [e.value for e in events.Scalars("val/f1")]
    assert max(f1) > 0.9
    checkpoint = torch.load(tagged["best"], weights_only=True)
    state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["monitor"] == "val/f1" and float(state["best_model_score"]) == pytest.approx(max(f1))
    thresholds = checkpoint["calibration"]["thresholds"]
    assert len(thresholds) == 3 and thresholds != [0.5, 0.5, 0.5]
    assert checkpoint["hyper_parameters"]["multi_label"] is True


def test_a_multilabel_model_predicts_sets_in_input_order(tagged, tmp_path):
    rows = tagged["rows"]
    (tmp_path / "new.txt").write_text("\n".join([r[0] for r in rows] + [""]) + "\n")
    out = tmp_path / "p.csv"
    assert run_cli("predict", "--ckpt_path", str(tagged["best"]), "--data.predict_file", str(tmp_path / "new.txt"),
                   "--data.loader.predict_batch_size", "32", "--prediction_writer.output_path", str(out),
                   "--trainer.enable_progress_bar", "false") == 0
    with open(out) as f:
        header = next(csv.reader(f))
    predicted = list(csv.DictReader(open(out)))
    assert header == ["index", "labels", "p_acting", "p_music", "p_plot"]
    assert [int(p["index"]) for p in predicted] == list(range(len(rows) + 1))
    assert predicted[-1]["labels"] == "" and predicted[-1]["p_acting"] == ""  # the empty line: nothing guessed
    right = sum(set(filter(None, p["labels"].split(";"))) == set(filter(None, r[1].split(";")))
                for p, r in zip(predicted, rows))
    assert right / len(rows) > 0.85
    assert any(p["labels"] == "" for p in predicted[:-1]) and any(";" in p["labels"] for p in predicted)
    api = Predictor.from_checkpoint(tagged["best"]).predict([r[0] for r in rows])
    assert [";".join(a["labels"]) for a in api] == [p["labels"] for p in predicted[:-1]]
    assert list(api[0]) == ["labels", "scores"] and list(api[0]["scores"]) == ["acting", "music", "plot"]
    # the most probable first, each at least its threshold
    thresholds = torch.load(tagged["best"], weights_only=True)["calibration"]["thresholds"]
    for a in api:
        assert [a["scores"][label] for label in a["labels"]] == sorted((a["scores"][x] for x in a["labels"]),
                                                                      reverse=True)
        assert all(a["scores"][label] >= thresholds[k] for k, label in enumerate(a["scores"]) if label in a["labels"])


def test_predict_overrides_the_thresholds_with_one_or_the_top_k(tagged, tmp_path):
    texts = [r[0] for r in tagged["rows"][:30]]
    (tmp_path / "new.txt").write_text("\n".join(texts) + "\n")
    for option, value, check in [("--top_k", "1", lambda labels: len(labels) == 1),
                                 ("--threshold", "0", lambda labels: len(labels) == 3)]:
        out = tmp_path / f"{option[2:]}.csv"
        assert run_cli("predict", "--ckpt_path", str(tagged["best"]), "--data.predict_file", str(tmp_path / "new.txt"),
                       option, value, "--prediction_writer.output_path", str(out),
                       "--trainer.enable_progress_bar", "false") == 0
        assert all(check(p["labels"].split(";")) for p in csv.DictReader(open(out)))
    top = Predictor.from_checkpoint(tagged["best"], top_k=2).predict(texts)
    assert all(len(a["labels"]) == 2 and a["labels"][0] == max(a["scores"], key=a["scores"].get) for a in top)


def test_top_k_and_threshold_are_refused_for_a_single_label_model(trained):
    with pytest.raises(ValueError, match="this model answers one label per text"):
        Predictor.from_checkpoint(trained["best"], top_k=2)


def test_testing_a_multilabel_model_reports_the_multilabel_metrics(tagged, tmp_path, capsys):
    assert run_cli("test", "--ckpt_path", str(tagged["best"]), "--data.test_file", str(tagged["test"]),
                   "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false") == 0
    out = capsys.readouterr().out
    for key in ("test/f1", "test/f1_micro", "test/jaccard", "test/subset_acc", "test/hamming", "test/f1/plot"):
        assert key in out
    macro = float(next(line.split()[-1] for line in out.splitlines() if line.split()[:1] == ["test/f1"]))
    assert macro > 0.85


def test_explaining_a_multilabel_answer_is_of_one_label_at_a_time(tagged):
    predictor = Predictor.from_checkpoint(tagged["best"], threads=1)
    text = "the actor gave a fine performance but the ending was weak and the twist obvious"
    top = predictor.explain(text)
    assert top["explained"] == max(top["scores"], key=top["scores"].get) and "labels" in top
    plot, acting = predictor.explain(text, label="plot"), predictor.explain(text, label="acting")
    assert plot["explained"] == "plot" and acting["explained"] == "acting"

    def weight(answer, word):
        return next(w["weight"] for w in answer["words"] if w["word"] == word)

    assert weight(plot, "ending") > weight(acting, "ending") and weight(acting, "actor") > weight(plot, "actor")
    with pytest.raises(ValueError, match="not one of the model's labels"):
        predictor.explain(text, label="sound")


def test_the_server_answers_a_set_and_a_score_per_label(tagged):
    from sentiment.inference.serve import PredictRequest, SentimentAPI

    predictor = Predictor.from_checkpoint(tagged["best"], threads=1)
    api = SentimentAPI(predictor, max_texts=4, max_text_bytes=1000, threads=1, max_batch_size=4, batch_timeout=0.0)
    api.setup("cpu")
    text = "the soundtrack and the song were lovely, the cast too"
    plain, explained = api.predict([PredictRequest(texts=[text]), PredictRequest(texts=[text], explain=True)])
    response = api.encode_response(plain)["predictions"][0]
    assert set(response["labels"]) == {"acting", "music"} and set(response["scores"]) == {"acting", "music", "plot"}
    assert explained[0]["labels"] == response["labels"]


def test_a_multilabel_model_exports_its_thresholds_and_a_probability_per_label(tagged, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from sentiment.inference.export import export

    export(str(tagged["best"]), str(tmp_path / "m.onnx"))
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props
            if p.key != "text_encoder"}
    saved = torch.load(tagged["best"], weights_only=True)["calibration"]["thresholds"]
    assert meta["multi_label"] is True and meta["thresholds"] == pytest.approx(saved)
    predictor = Predictor.from_checkpoint(tagged["best"], compute="float32-plain", threads=1)
    texts = [r[0] for r in tagged["rows"][:8]]
    inputs = predictor.encoder.model_inputs(texts)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    expected = np.array([[a["scores"][label] for label in meta["labels"]] for a in predictor.predict(texts)])
    assert got == pytest.approx(expected, abs=1e-4)
    assert not np.allclose(got.sum(1), 1)  # each label's own probability, not a distribution


def test_balanced_weights_of_label_sets_weigh_each_labels_positives(tmp_path):
    import lightning as L

    from sentiment.training.classifier import SentimentClassifier

    rows = [("a b", "x"), ("a c", "x;y"), ("b c", ""), ("c d", "y"), ("d e", "")] * 20
    train = write_csv(tmp_path / "train.csv", rows)
    dm = SentimentDataModule(data_dir=str(tmp_path / "d"), train_file=str(train),
                             encoding={"min_freq": 1, "multi_label": True})
    dm.prepare_data()
    dm.setup("fit")
    sets = np.asarray(dm.dataset("train").labels)
    assert dm.label_names == ["x", "y"] and dm.class_counts == sets.sum(0).tolist() and len(sets) == 90
    model = SentimentClassifier(vocab_size=dm.vocab_size, classes=dm.label_names, multi_label=True,
                                class_weights="balanced", adversarial=0.0, net={"embed_dim": 8, "hidden_dim": 8})
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, dm)
    positives = sets.sum(0)
    assert model.class_weight.tolist() == pytest.approx(np.sqrt((90 - positives) / positives).tolist())


def test_the_page_shows_the_set_and_a_bar_per_label(tagged):
    from test_serve import ARTIFACTS, chromium, needs_browser, serve, stop

    if needs_browser.args[0]:
        pytest.skip(needs_browser.kwargs["reason"])
    text = "the soundtrack and the song were lovely, the cast too"
    process, client = serve(tagged["best"])
    try:
        expected = client.predict({"texts": [text]})[1]["predictions"][0]
        assert len(expected["labels"]) == 2
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{client.port}/")
            page.fill("#review", text)
            page.click("#classify")
            page.wait_for_selector("#bars [role=meter]", timeout=15_000)
            assert page.inner_text("#verdict") == ", ".join(expected["labels"])
            bars = page.locator("#bars [role=meter]")
            assert [bars.nth(i).get_attribute("aria-label") for i in range(bars.count())] == [
                "probability of acting", "probability of music", "probability of plot"]
            assert [bars.nth(i).get_attribute("aria-valuenow") for i in range(3)] == [
                str(round(p * 100)) for p in expected["scores"].values()]
            assert sorted(page.locator("#bars .best").all_inner_texts()) == sorted(expected["labels"])
            page.fill("#review", "the the and of it")
            page.click("#classify")
            page.wait_for_selector("#verdict:has-text('none of the labels')", timeout=15_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "serve-page-multilabel.png"), full_page=True)
    finally:
        stop(process)


def test_validating_the_best_checkpoint_gives_its_score_with_its_thresholds(tagged, tmp_path, capsys):
    # the validation split carved from the training file again, read with the checkpoint's thresholds
    checkpoint = torch.load(tagged["best"], weights_only=True)
    state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert run_cli("validate", "--ckpt_path", str(tagged["best"]), "--data.data_dir", str(tagged["root"] / "data"),
                   "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false") == 0
    out = capsys.readouterr().out
    macro = float(next(line.split()[-1] for line in out.splitlines() if line.split()[:1] == ["val/f1"]))
    assert macro == pytest.approx(float(state["best_model_score"]), abs=1e-6)


def test_a_multilabel_model_trains_further_from_its_checkpoint_on_new_sets(tagged, tmp_path):
    more = write_csv(tmp_path / "more.csv", make_tagged(300, seed=9), header=("text", "labels"))
    assert run_cli("fit", "--init_from", str(tagged["best"]), "--data.train_file", str(more), "--data.label_column",
                   "labels", "--data.data_dir", str(tmp_path / "d"), "--data.loader.min_epoch_size", "0",
                   "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
                   "--trainer.default_root_dir", str(tmp_path)) == 0
    best = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    answers = Predictor.from_checkpoint(best).predict([r[0] for r in make_tagged(60, seed=11)])
    assert all(set(a) == {"labels", "scores"} for a in answers)
    right = sum(set(a["labels"]) == set(filter(None, r[1].split(";")))
                for a, r in zip(answers, make_tagged(60, seed=11)))
    assert right / 60 > 0.8
