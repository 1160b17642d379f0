"""Learning from unlabelled reviews through the loss: unlabelled batches beside the labelled ones, virtual adversarial
training and entropy minimisation."""

import lightning as L
import numpy as np
import pytest
import torch
from conftest import make_reviews, run_cli, write_csv

from sentiment import SentimentClassifier, SentimentDataModule
from sentiment.network.model import NetConfig, SentimentNet, divergence, entropy, virtual_adversarial_loss


def test_the_virtual_adversarial_shift_moves_the_prediction_more_than_a_random_one_and_trains_the_weights():
    torch.manual_seed(0)
    net = SentimentNet(50, NetConfig(embed_dim=16, hidden_dim=16, dropout=0.0, embed_dropout=0.0, word_dropout=0.0))
    net.head.weight.data *= 20  # a sharp model, whose predictions a shift can move
    ids = torch.randint(2, 50, (32, 12))
    lengths = torch.randint(3, 13, (32,))
    ids[torch.arange(12)[None, :] >= lengths[:, None]] = 0
    loss, logits = virtual_adversarial_loss(net, ids, lengths, epsilon=1.0)
    assert loss.item() > 0 and logits.shape == (32,)
    loss.backward()
    assert net.head.weight.grad.abs().sum() > 0 and net.embedding.weight.grad.abs().sum() > 0
    # the same norm in random directions moves the predictions less
    x, _ = net.embed(ids, lengths, reversed_too=False)
    real = (torch.arange(12)[:, None] < lengths[None, :]).unsqueeze(-1)
    moved = []
    with torch.no_grad():
        for _ in range(20):
            d = torch.randn(x.shape) * real
            d = d / d.pow(2).sum(dim=(0, 2), keepdim=True).sqrt()
            moved.append(divergence(logits, net.read(x + d, ids, lengths)).item())
    assert loss.item() > 3 * np.mean(moved), (loss.item(), np.mean(moved))


def test_entropy_is_the_predictions_spread_for_one_logit_and_for_several_classes():
    assert entropy(torch.tensor([0.0, 0.0])).item() == pytest.approx(np.log(2))
    assert entropy(torch.tensor([[0.0, 0.0, 0.0]])).item() == pytest.approx(np.log(3))
    assert entropy(torch.tensor([30.0])).item() < 1e-6
    assert entropy(torch.tensor([[0.0, 0.0]]), multi_label=True).item() == pytest.approx(2 * np.log(2))


def _data(tmp_path, n_unlabelled=200):
    train = write_csv(tmp_path / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(300)])
    lines = [t for t, _ in make_reviews(n_unlabelled, seed=9)]
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("\n".join(lines[:50] + ["", "zzzonlyunlabelled " * 3] + lines[50:]) + "\n")
    return train, unlabelled, lines


class _Seen(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch = batch

    def on_train_end(self, trainer, pl_module):
        self.metrics = dict(trainer.callback_metrics)


def _fit(tmp_path, train, unlabelled, name, vat=0.0, entropy_weight=0.0, batch_size=16, epochs=4, callbacks=(),
         **model_kwargs):
    dm = SentimentDataModule(data_dir=str(tmp_path / "data"), train_file=str(train), encoding={"min_freq": 1},
                             unlabelled={"per_batch": batch_size, "file": str(unlabelled)},
                             loader={"batch_size": 32, "min_epoch_size": 0})
    dm.prepare_data()
    L.seed_everything(3)
    model = SentimentClassifier(vocab_size=dm.vocab_size, bag_size=dm.bag_size, vat=vat, entropy=entropy_weight,
                                net={"embed_dim": 16, "hidden_dim": 16}, **{"adversarial": 0.0, **model_kwargs})
    seen = _Seen()
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[seen, *callbacks], default_root_dir=str(tmp_path / name))
    trainer.fit(model, dm)
    return dm, model, seen


def test_unlabelled_batches_train_with_both_losses_and_never_reach_the_vocabulary(tmp_path):
    train, unlabelled, lines = _data(tmp_path)
    dm, model, seen = _fit(tmp_path, train, unlabelled, "both", vat=1.0, entropy_weight=0.5)
    assert {"train/vat_loss", "train/entropy", "train/loss"} <= seen.metrics.keys()
    assert set(seen.batch) == {"labelled", "unlabelled"} and len(seen.batch["unlabelled"]["lengths"]) == 16
    assert len(dm.dataset("unlabelled")) == len(lines) + 1  # the empty line left out
    assert "zzzonlyunlabelled" not in dm.vocab.stoi  # the vocabulary and the bag are the labelled reviews'
    plain = SentimentDataModule(data_dir=str(tmp_path / "plain"), train_file=str(train), encoding={"min_freq": 1})
    plain.prepare_data()
    assert plain.vocab == dm.vocab
    np.testing.assert_array_equal(plain.corpus.bag_ratios, dm.corpus.bag_ratios)


def test_entropy_minimisation_makes_the_model_surer_of_the_unlabelled_reviews(tmp_path):
    train, unlabelled, lines = _data(tmp_path)
    spread = {}
    for weight in (1e-9, 10.0):
        dm, model, _ = _fit(tmp_path, train, unlabelled, f"e{weight}", entropy_weight=weight, unlabelled_every=1)
        model.eval()
        with torch.no_grad():
            inputs = dm.text_encoder.model_inputs(lines)
            spread[weight] = entropy(model(**inputs)).item()
    assert spread[10.0] < 0.6 * spread[1e-9], spread


def test_every_other_step_the_unlabelled_losses_take_the_steps_the_adversarial_loss_leaves(tmp_path, monkeypatch):
    import sentiment.training.classifier as classifier
    train, unlabelled, _ = _data(tmp_path)
    calls, steps = [], []

    def recorded(name, function):
        def call(*args, **kwargs):
            calls.append(name)
            return function(*args, **kwargs)
        return call

    monkeypatch.setattr(classifier, "virtual_adversarial_loss", recorded("vat", classifier.virtual_adversarial_loss))
    monkeypatch.setattr(classifier, "adversarial_losses", recorded("adversarial", classifier.adversarial_losses))

    class Steps(L.Callback):
        def on_train_batch_end(self, *args):
            steps.append(tuple(calls))
            calls.clear()

    _fit(tmp_path, train, unlabelled, "every", vat=1.0, epochs=1, callbacks=[Steps()], adversarial=1.0,
         adversarial_every=2, unlabelled_every=2)
    assert len(steps) >= 6 and steps == [("vat",) if i % 2 else ("adversarial",) for i in range(len(steps))], steps
    with pytest.raises(ValueError, match="unlabelled_every must be 1 or more, got 0"):
        SentimentClassifier(vocab_size=10, unlabelled_every=0)


def test_without_unlabelled_texts_or_losses_the_labelled_batches_train_alone_and_the_fit_says_why(tmp_path):
    import logging.handlers
    train, unlabelled, _ = _data(tmp_path, 20)
    # your own data without unlabelled texts: the recipe's batches are the labelled ones, and the fit says so
    seen = []

    class Seen(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch)

    dm = SentimentDataModule(data_dir=str(tmp_path / "own"), train_file=str(train), encoding={"min_freq": 1},
                             unlabelled={"per_batch": 32}, loader={"batch_size": 32, "min_epoch_size": 0})
    assert "unlabelled" not in dm.corpus.sources()
    dm.prepare_data()
    L.seed_everything(3)
    model = SentimentClassifier(vocab_size=dm.vocab_size, bag_size=dm.bag_size, net={"hidden_dim": 8})
    heard = logging.handlers.BufferingHandler(100)
    logging.getLogger("lightning.pytorch").addHandler(heard)  # Lightning's logger does not propagate to caplog
    try:
        L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  callbacks=[Seen()]).fit(model, dm)
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(heard)
    assert len(seen) == 3 and all(set(b) == {"input_ids", "lengths", "labels", "bag_ids"} for b in seen)
    assert ("--data.unlabelled.per_batch 32: no unlabelled texts beside your --data.train_file "
            "(--data.unlabelled.file names some); training on the labelled ones alone") in [
        r.getMessage() for r in heard.buffer]
    # an IMDb archive without its unlabelled reviews: the same, and the line says where they were looked for
    from conftest import build_imdb_archive

    (tmp_path / "bare").mkdir()
    build_imdb_archive(tmp_path / "bare" / "aclImdb_v1.tar.gz", n_test=0, unsup=False)
    bare = SentimentDataModule(data_dir=str(tmp_path / "bare"), encoding={"min_freq": 1}, unlabelled={"per_batch": 32},
                               loader={"batch_size": 32, "min_epoch_size": 0})
    bare.prepare_data()
    heard.buffer.clear()
    logging.getLogger("lightning.pytorch").addHandler(heard)
    try:
        bare.setup("fit")
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(heard)
    assert [r.getMessage() for r in heard.buffer] == [
        "--data.unlabelled.per_batch 32: no unlabelled texts in IMDb's archive (its train/unsup holds none); training "
        "on the labelled ones alone"]
    assert set(next(iter(bare.train_dataloader()))) == {"input_ids", "lengths", "labels", "bag_ids"}
    # unlabelled batches with no loss to learn from them: the labelled loss alone, as without them
    losses = {}
    for name, batch_size in (("without", 0), ("beside", 16)):
        _, model, seen_fit = _fit(tmp_path, train, unlabelled, name, batch_size=batch_size, epochs=1)
        losses[name] = model.net.head.weight.detach().clone()
        assert not {"train/vat_loss", "train/entropy"} & seen_fit.metrics.keys()
    torch.testing.assert_close(losses["without"], losses["beside"])


def test_self_training_trains_its_teacher_with_the_unlabelled_losses_and_keys_it_by_their_batches(tmp_path):
    from conftest import build_archive_with_unlabelled

    from sentiment.training.selftrain import self_train

    data_dir = tmp_path / "data"
    build_archive_with_unlabelled(data_dir, 40)
    batches = []

    class Seen(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            batches.append(batch)

    teachers = []
    for per_batch in (8, 16):
        dm = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1}, unlabelled={"per_batch": per_batch},
                                 loader={"min_epoch_size": 0, "batch_size": 32})
        dm.prepare_data()
        model = SentimentClassifier(vocab_size=dm.vocab_size, bag_size=dm.bag_size, net={"hidden_dim": 8}, vat=1.0,
                                    entropy=0.5)
        student_data = self_train(model, dm, {"max_steps": 2, "enable_progress_bar": False}, seed=1,
                                  callbacks=[Seen()])
        teachers.append(student_data.unlabelled.pseudo_labels)
        assert student_data.unlabelled.per_batch == per_batch  # the student learns from them too
    assert len(set(teachers)) == 2  # a teacher trained with 8 unlabelled reviews a batch is not one trained with 16
    assert [len(b["unlabelled"]["lengths"]) for b in batches] == [8, 8, 16, 16]


def test_a_self_training_teacher_is_keyed_by_the_word_vectors_it_starts_from(tmp_path):
    from conftest import build_archive_with_unlabelled

    from sentiment.training.selftrain import teacher_path

    data_dir = tmp_path / "data"
    build_archive_with_unlabelled(data_dir, 10)
    model = SentimentClassifier(vocab_size=100, net={"embed_dim": 8, "hidden_dim": 8})
    kinds = ({}, {"word_vectors": 8}, {"word_vectors": 8, "vector_epochs": 1}, {"vector_epochs": 1})
    paths = [teacher_path(model, SentimentDataModule(data_dir=str(data_dir), unlabelled=u), {}, 1) for u in kinds]
    assert len({p.parent for p in paths}) == 1 and len(set(paths[:3])) == 3  # one data cache, a teacher for each
    assert paths[3] == paths[0]  # without vectors their passes change nothing: the same teacher


def test_sentiment_fit_learns_from_imdbs_unlabelled_reviews_by_default(tmp_path):
    from conftest import build_archive_with_unlabelled
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data_dir = tmp_path / "data"
    build_archive_with_unlabelled(data_dir, 40)
    common = ["--data.data_dir", str(data_dir), "--data.encoding.min_freq", "1", "--data.loader.min_epoch_size", "0",
              "--model.net.hidden_dim", "8", "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "1",
              "--trainer.enable_progress_bar", "false"]
    tags = {}
    for name, extra in (("default", []), ("off", ["--data.unlabelled.per_batch", "0"])):
        assert run_cli("fit", *common, *extra, "--trainer.default_root_dir", str(tmp_path / name)) == 0
        run = tmp_path / name / "lightning_logs" / "version_0"
        events = EventAccumulator(str(run))
        events.Reload()
        tags[name] = set(events.Tags()["scalars"])
        saved = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)["datamodule_hyper_parameters"]
        assert saved["unlabelled"]["per_batch"] == (0 if extra else 32)
    # entropy minimisation by default, on every other step, the steps the adversarial loss leaves
    assert {"train/entropy", "train/adversarial_loss"} <= tags["default"] and "train/vat_loss" not in tags["default"]
    assert "train/entropy" not in tags["off"] and "train/adversarial_loss" in tags["off"]
