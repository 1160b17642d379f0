"""Any label set: the order rules, --data.encoding.labels, errors, the stratified split, class weights, three classes
end to end, star ratings, and binary checkpoints written before label sets."""

import csv

import numpy as np
import pytest
import torch
import yaml
from conftest import CONFIGS, REAL_ARCHIVE, build_imdb_archive, make_polar_reviews, run_cli, write_csv

from sentiment.data.corpus import stratified_split
from sentiment.data.datamodule import SentimentDataModule
from sentiment.errors import DataError
from sentiment.data.labels import LabelReader
from sentiment.network.model import classification_loss
from sentiment.inference.predictor import Predictor

ORDERS = [
    (["pos", "neg", "NEG", "1"], ("negative", "positive")),  # the binary words of old, mixed: two classes
    (["0", "1", "True"], ("negative", "positive")),
    (["Positive", "neutral", "NEGATIVE"], ("negative", "neutral", "positive")),  # the natural order, any case
    (["10", "2", "9", "1", "2.0"], ("1", "2", "9", "10")),  # numbers numerically, "2.0" is 2
    (["0", "1", "2"], ("0", "1", "2")),  # a third number: ratings, not polarity
    (["sports", "Tech", "arts"], ("Tech", "arts", "sports")),  # other strings alphabetically (as written)
]


@pytest.mark.parametrize("values, expected", ORDERS, ids=[" ".join(v) for v, _ in ORDERS])
def test_the_label_set_and_its_order_come_from_the_training_values(values, expected):
    reader = LabelReader.from_training(values)
    assert reader.labels == expected
    classes = reader.read(values, "train.csv", [f"row {i + 1}" for i in range(len(values))])
    assert [expected[c] for c in classes] == [reader.labels[reader.index(v)] for v in values]


def test_given_labels_fix_the_set_and_order_and_name_what_falls_outside(tmp_path):
    reader = LabelReader.from_training(["a"], given=["positive", "neutral", "negative"])
    assert reader.labels == ("positive", "neutral", "negative")
    assert reader.read(["neg", "Neutral", "1"], "f", ["row 1", "row 2", "row 3"]).tolist() == [2, 1, 0]
    with pytest.raises(DataError, match=r"^t.csv: row 2: label 'meh' is not one of the labels positive, neutral, "
                                        r"negative$"):
        reader.read(["pos", "meh"], "t.csv", ["row 1", "row 2"])


def test_an_unknown_label_in_the_test_file_is_one_line_naming_file_row_value_and_labels(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", make_polar_reviews(60))
    test = write_csv(tmp_path / "test.csv", [("fine film", "neutral"), ("odd film", "great")])
    code = run_cli("fit", "--data.train_file", str(train), "--data.test_file", str(test),
                   "--data.data_dir", str(tmp_path / "data"), "--trainer.default_root_dir", str(tmp_path))
    assert code == 1
    assert capsys.readouterr().err == (f"error: {test}: row 2: label 'great' is not one of the labels negative, "
                                       "neutral, positive\n")


def test_the_validation_split_keeps_every_class_in_its_share():
    classes = np.array([0] * 300 + [1] * 60 + [2] * 12 + [3] * 3)
    val, train = stratified_split(np.random.default_rng(0).permutation(classes), 0.1, seed=7)
    shuffled = np.random.default_rng(0).permutation(classes)
    assert np.bincount(shuffled[val]).tolist() == [30, 6, 1, 1]  # a rare class keeps one of its three
    assert sorted([*val, *train]) == list(range(len(classes)))
    again, _ = stratified_split(shuffled, 0.1, seed=7)
    other, _ = stratified_split(shuffled, 0.1, seed=8)
    assert again.tolist() == val.tolist() and other.tolist() != val.tolist()


def test_a_validation_split_by_movie_takes_whole_movies_and_keeps_each_class_share():
    rng = np.random.default_rng(0)
    movies = rng.integers(0, 120, 1000)  # 120 movies, about 8 reviews each
    classes = (rng.random(1000) < np.where(movies % 3 == 0, 0.9, 0.3)).astype(int)  # some movies liked more
    val, train = stratified_split(classes, 0.1, seed=7, groups=[f"tt{m}" for m in movies])
    assert not set(movies[val]) & set(movies[train])  # no movie on both sides
    share = np.round(np.bincount(classes) * 0.1)
    assert np.abs(np.bincount(classes[val]) - share).max() <= 1  # as close as movies of ~8 reviews allow
    assert sorted([*val, *train]) == list(range(1000))
    other, _ = stratified_split(classes, 0.1, seed=8, groups=[f"tt{m}" for m in movies])
    assert set(movies[other]) != set(movies[val])
    at_random, rest = stratified_split(classes, 0.1, seed=7)
    assert set(movies[at_random]) & set(movies[rest])  # what a split by review does


def test_balanced_class_weights_weigh_each_class_alike():
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 2])  # class 0 three times as common and well predicted; class 2 not
    counts = torch.bincount(labels, minlength=3).float().clamp(min=1)
    weights = counts.sum() / (3 * counts)
    plain = classification_loss(logits, labels)
    weighted = classification_loss(logits, labels, class_weights=weights)
    per_review = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert weighted.item() == pytest.approx(((per_review[:3].mean() + per_review[3]) / 2).item())  # each class alike
    assert plain.item() == pytest.approx(per_review.mean().item()) and weighted.item() != pytest.approx(plain.item())
    binary = classification_loss(torch.tensor([2.0, 2.0, -1.0]), torch.tensor([1, 1, 0]),
                                 class_weights=torch.tensor([3.0, 1.0]))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, 2.0, -1.0]),
                                                               torch.tensor([1.0, 1.0, 0.0]), reduction="none")
    assert binary.item() == pytest.approx(((bce[0] + bce[1] + 3 * bce[2]) / 5).item())


def test_balanced_class_weights_reach_the_training_loss(tmp_path):
    import lightning as L

    from sentiment.training.classifier import SentimentClassifier

    train = write_csv(tmp_path / "train.csv", make_polar_reviews(300, shares=(1, 1, 4)))
    dm = SentimentDataModule(data_dir=str(tmp_path / "d"), train_file=str(train), encoding={"min_freq": 1},
                             loader={"batch_size": 32})
    dm.prepare_data()
    assert dm.label_names == ["negative", "neutral", "positive"] and dm.class_counts == [45, 45, 180]
    model = SentimentClassifier(vocab_size=dm.vocab_size, classes=dm.label_names, class_weights="balanced",
                                adversarial=0.0, net={"embed_dim": 8, "hidden_dim": 8})
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, dm)
    assert model.class_weight.tolist() == pytest.approx([270 / 135, 270 / 135, 270 / 540])


def test_three_classes_train_and_log_a_3x3_matrix_and_a_score_per_class(three):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(three["root"] / "lightning_logs" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"val/acc", "val/f1", "val/precision", "val/recall", "val/auroc", "val/ece", "val/f1/negative",
            "val/f1/neutral", "val/f1/positive"} <= set(tags["scalars"])
    assert "val/mae" not in tags["scalars"]  # words, not numbers
    assert {"val/pr_curve/negative", "val/pr_curve/neutral", "val/pr_curve/positive"} <= set(tags["tensors"])
    assert tags["images"] == ["val/confusion_matrix"]
    assert events.Scalars("val/acc")[-1].value > 0.8
    hparams = yaml.safe_load((three["root"] / "lightning_logs" / "version_0" / "hparams.yaml").read_text())
    assert hparams["classes"] == ["negative", "neutral", "positive"]


def test_three_classes_predict_a_column_per_class_in_input_order(three, tmp_path):
    rows = list(csv.DictReader(open(three["test"])))
    (tmp_path / "new.txt").write_text("\n".join(r["text"] for r in rows) + "\n")
    assert run_cli("predict", "--ckpt_path", str(three["best"]), "--data.predict_file", str(tmp_path / "new.txt"),
                   "--data.loader.predict_batch_size", "32", "--prediction_writer.output_path", str(tmp_path / "p.csv"),
                   "--trainer.enable_progress_bar", "false") == 0
    with open(tmp_path / "p.csv") as f:
        header = next(csv.reader(f))
        predicted = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert header == ["index", "label", "score", "p_negative", "p_neutral", "p_positive"]
    assert [int(p["index"]) for p in predicted] == list(range(len(rows)))
    right = sum(p["label"] == r["label"] for p, r in zip(predicted, rows))
    assert right / len(rows) > 0.8  # rows and answers line up
    for p in predicted:
        probs = [float(p[f"p_{c}"]) for c in ("negative", "neutral", "positive")]
        assert sum(probs) == pytest.approx(1, abs=1e-5) and float(p["score"]) == max(probs)
    api = Predictor.from_checkpoint(three["best"]).predict([r["text"] for r in rows])
    assert [a["label"] for a in api] == [p["label"] for p in predicted]
    assert list(api[0]["scores"]) == ["negative", "neutral", "positive"] and "expected" not in api[0]


def test_three_classes_explain_and_serve_answer_with_every_class(three):
    from sentiment.inference.serve import PredictRequest, SentimentAPI

    predictor = Predictor.from_checkpoint(three["best"], threads=1)
    api = SentimentAPI(predictor, max_texts=4, max_text_bytes=1000, threads=1, max_batch_size=4, batch_timeout=0.0)
    api.setup("cpu")
    plain, explained = api.predict([PredictRequest(texts=["okay average decent film"]),
                                    PredictRequest(texts=["okay average decent film"], explain=True)])
    response = api.encode_response(plain)["predictions"][0]
    assert response["label"] == "neutral" and set(response["scores"]) == {"negative", "neutral", "positive"}
    assert explained[0]["scores"] == pytest.approx(response["scores"])
    assert [w["word"] for w in explained[0]["words"]] == ["okay", "average", "decent", "film"]


def test_a_binary_checkpoint_written_before_label_sets_predicts_as_it_did(trained, tmp_path):
    # the checkpoint as this project wrote it before: no class list among the hyperparameters, no calibration
    checkpoint = torch.load(trained["best"], weights_only=True)
    checkpoint["hyper_parameters"].pop("classes")
    checkpoint["hyper_parameters"].pop("class_weights")
    checkpoint.pop("calibration")
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old = Predictor.from_checkpoint(tmp_path / "old.ckpt", compute="float32")
    texts = ["brilliant superb fun", "awful dull waste", "the plot", ""]
    with torch.no_grad():  # what the old code answered as `score`
        positive = torch.sigmoid(old.net(**old.encoder.model_inputs(texts))).tolist()
    answers = old.predict(texts)
    assert old.labels == ("negative", "positive") and old.temperature == 1.0
    assert [a["scores"]["positive"] for a in answers] == pytest.approx(positive, abs=1e-6)
    assert [a["label"] for a in answers] == ["positive" if p >= 0.5 else "negative" for p in positive]
    (tmp_path / "new.txt").write_text("\n".join(texts) + "\n")
    assert run_cli("predict", "--ckpt_path", str(tmp_path / "old.ckpt"), "--data.predict_file",
                   str(tmp_path / "new.txt"), "--prediction_writer.output_path", str(tmp_path / "p.csv"),
                   "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false") == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert rows[-1]["p_positive"] == ""  # the empty line: marked as empty
    assert [float(r["p_positive"]) for r in rows[:-1]] == pytest.approx(positive[:-1], abs=1e-5)


def test_imdb_star_ratings_are_an_eight_class_task(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    build_imdb_archive(data / "aclImdb_v1.tar.gz", n_train=400, n_test=40)
    dm = SentimentDataModule(data_dir=str(data), encoding={"target": "rating", "min_freq": 1})
    dm.prepare_data()
    assert dm.label_names == ["1", "2", "3", "4", "7", "8", "9", "10"]
    assert sum(dm.class_counts) == 360 and min(dm.class_counts) > 0
    root = tmp_path / "run"
    assert run_cli("fit", "--data.data_dir", str(data), "--data.encoding.target", "rating",
                   "--data.encoding.min_freq", "1",
                   "--data.loader.min_epoch_size", "0",
                   "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8", "--trainer.max_epochs", "1",
                   "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)) == 0
    best = root / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    answer = Predictor.from_checkpoint(best).predict("a film")[0]
    assert list(answer["scores"]) == dm.label_names
    assert answer["expected"] == pytest.approx(sum(int(k) * p for k, p in answer["scores"].items()))
    assert run_cli("test", "--ckpt_path", str(best), "--data.data_dir", str(data),
                   "--trainer.default_root_dir", str(root / "eval"),
                   "--trainer.enable_progress_bar", "false") == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(root / "eval" / "lightning_logs" / "version_0"))
    events.Reload()
    assert {"test/acc", "test/mae", "test/f1/10", "test/f1/1"} <= set(events.Tags()["scalars"])


def test_a_rating_target_with_own_files_is_refused(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", make_polar_reviews(30))
    assert run_cli("fit", "--data.train_file", str(train), "--data.encoding.target", "rating",
                   "--data.data_dir", str(tmp_path / "d"), "--trainer.default_root_dir", str(tmp_path)) == 1
    assert capsys.readouterr().err.startswith("error: --data.encoding.target rating reads IMDb's file names")


@pytest.mark.slow
@pytest.mark.skipif(not REAL_ARCHIVE.exists(), reason="the IMDb training archive is not in ../shared/data")
def test_real_imdb_ratings(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "aclImdb_v1.tar.gz").symlink_to(REAL_ARCHIVE)
    root = tmp_path / "run"
    assert run_cli("fit", *(arg for name in ("imdb.yaml", "imdb_rating.yaml", "debug.yaml")
                           for arg in ("--config", str(CONFIGS / name))), "--data.data_dir", str(data),
                   "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false") == 0
    dm = SentimentDataModule(data_dir=str(data), encoding={"target": "rating"})
    dm.prepare_data()
    assert dm.label_names == ["1", "2", "3", "4", "7", "8", "9", "10"]
    counts = dict(zip(dm.label_names, dm.class_counts))
    # a tenth of each class held out, as closely as whole movies allow
    assert abs(sum(counts.values()) - 22_500) <= 10 and counts["1"] > counts["2"]  # one star: the commonest low


def test_a_three_class_model_exports_to_onnx_with_a_column_per_class(three, tmp_path):
    import json

    import onnxruntime as ort

    assert run_cli("export", "--ckpt_path", str(three["best"]), "--output", str(tmp_path / "m.onnx")) == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["labels"]) == ["negative", "neutral", "positive"]
    predictor = Predictor.from_checkpoint(three["best"], compute="float32")
    texts = ["okay average film", "awful", "brilliant superb fun and a moving story"]
    (probs,) = session.run(None, {k: v.numpy() for k, v in predictor.encoder.model_inputs(texts).items()})
    np.testing.assert_allclose(probs, [list(a["scores"].values()) for a in predictor.predict(texts)], atol=1e-4)
