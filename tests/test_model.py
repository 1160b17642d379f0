import dataclasses
import itertools
import subprocess
import sys

import pytest
import torch
from conftest import make_reviews, needs_bfloat16, run_cli

from sentiment.training.classifier import SentimentClassifier
from sentiment.network.model import (
    CELLS,
    POOLINGS,
    FastDropout,
    NetConfig,
    SentimentNet,
    adversarial_losses,
    classification_loss,
    reverse_within_lengths,
)
from sentiment.errors import DataError
from sentiment.inference.predictor import Predictor
from sentiment.data.text import TextEncoder, Vocab


@pytest.mark.parametrize("cell, pooling, bidirectional",
                         [(c, p, b) for c, p in itertools.product(CELLS, POOLINGS) for b in (False, True)])
def test_forward_shapes_for_every_cell_and_pooling(cell, pooling, bidirectional):
    net = SentimentNet(vocab_size=50, embed_dim=8, hidden_dim=6, cell=cell, pooling=pooling,
                       bidirectional=bidirectional, num_layers=2)
    input_ids = torch.randint(1, 50, (5, 12))
    lengths = torch.tensor([12, 3, 7, 1, 0])
    logits, weights = net(input_ids, lengths, return_attention=True)
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all()
    if pooling == "attention":
        assert weights.shape == (5, 12)
        torch.testing.assert_close(weights.sum(1), torch.ones(5))
        assert (weights[1, 3:] == 0).all()  # no attention on padding
    else:
        assert weights is None


@pytest.mark.parametrize("cell, pooling, bidirectional",
                         [(c, p, b) for c, p in itertools.product(CELLS, POOLINGS) for b in (False, True)])
def test_padding_never_changes_a_logit(cell, pooling, bidirectional):
    torch.manual_seed(0)
    net = SentimentNet(vocab_size=30, embed_dim=8, hidden_dim=6, cell=cell, pooling=pooling,
                       bidirectional=bidirectional).eval()
    review = torch.randint(2, 30, (1, 5))
    alone = net(review, torch.tensor([5]))
    longer = torch.randint(2, 30, (2, 20))
    batch = torch.zeros(3, 20, dtype=torch.long)
    batch[0, :5] = review
    batch[1:] = longer
    together = net(batch, torch.tensor([5, 20, 11]))
    torch.testing.assert_close(together[0], alone[0])
    # whatever sits in the padded positions does not matter either
    batch[0, 5:] = 7
    torch.testing.assert_close(net(batch, torch.tensor([5, 20, 11]))[0], alone[0])


def test_the_network_and_the_tokenizer_import_no_lightning():
    # sold as plain PyTorch: importing them (through the package) must not pull in Lightning or its companions
    code = ("import sys, sentiment.network.model, sentiment.data.text; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'pytorch_lightning', "
            "'torchmetrics', 'tensorboard', 'litserve'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_names_its_api_and_refuses_others():
    import sentiment

    assert sentiment.SentimentNet is SentimentNet and sentiment.SentimentClassifier is SentimentClassifier
    assert set(sentiment.__all__) <= set(dir(sentiment))
    with pytest.raises(AttributeError, match="no attribute 'SentimentModel'"):
        sentiment.SentimentModel


def test_the_classifier_builds_the_recommended_network_and_records_every_setting():
    model = SentimentClassifier(vocab_size=50, net={"hidden_dim": 8})
    net = SentimentNet(vocab_size=50, hidden_dim=8)
    assert [tuple(p.shape) for p in model.net.parameters()] == [tuple(p.shape) for p in net.parameters()]
    assert model.net.bidirectional and model.net.pooling == "attention" and model.hparams.adversarial > 0
    # every network setting, defaults included: a checkpoint rebuilds its network even if the defaults change
    assert model.hparams.net == dataclasses.asdict(NetConfig(hidden_dim=8)) and model.hparams.net["embed_dim"] == 128
    assert model.net.config == NetConfig(hidden_dim=8)
    with pytest.raises(TypeError, match="hiden_dim"):
        SentimentClassifier(vocab_size=50, net={"hiden_dim": 8})


def test_a_checkpoint_from_before_net_config_loads_and_answers_as_it_did(trained, tmp_path):
    # checkpoints written before NetConfig kept the network's settings beside the classifier's: the same
    # probabilities, from the Predictor and from `sentiment test`'s checkpoint read
    new = torch.load(trained["best"], weights_only=True)
    old = {**new, "hyper_parameters": {k: v for k, v in new["hyper_parameters"].items() if k != "net"}}
    old["hyper_parameters"].update(new["hyper_parameters"]["net"], ngram_buckets=0, ngram_dim=16, unk_id=1)
    torch.save(old, tmp_path / "old.ckpt")
    texts = [t for t, _ in make_reviews(40, seed=3)]
    expected = Predictor.from_checkpoint(trained["best"]).predict(texts)
    got = Predictor.from_checkpoint(tmp_path / "old.ckpt").predict(texts)
    assert [a["label"] for a in got] == [a["label"] for a in expected]
    for a, b in zip(got, expected):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    for name in ("old", "new"):  # `sentiment predict` rebuilds the network from the checkpoint's settings too
        ckpt = tmp_path / "old.ckpt" if name == "old" else trained["best"]
        assert run_cli("predict", "--ckpt_path", str(ckpt), "--data.predict_file", str(tmp_path / "texts.txt"),
                       "--prediction_writer.output_path", str(tmp_path / f"{name}.csv"), "--trainer.precision",
                       "32-true", "--trainer.enable_progress_bar", "false") == 0
    assert (tmp_path / "old.csv").read_text() == (tmp_path / "new.csv").read_text()
    old["hyper_parameters"]["ngram_buckets"] = 64  # the hashed-bigram bag, gone: refused in one line
    torch.save(old, tmp_path / "bigrams.ckpt")
    with pytest.raises(DataError, match="hashed bigrams .ngram_buckets., which this sentiment release no longer"):
        Predictor.from_checkpoint(tmp_path / "bigrams.ckpt")


def _toy_batches(n_batches=4, batch_size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        labels = torch.randint(0, 2, (batch_size,), generator=g)
        input_ids = torch.randint(4, 40, (batch_size, 10), generator=g)
        input_ids[:, 3] = 2 + labels  # the sentiment word
        batches.append({"input_ids": input_ids, "lengths": torch.full((batch_size,), 10), "labels": labels})
    return batches


def _correct_after_training(model, loss_of, epochs: int) -> int:
    """Train ``model`` on the toy batches with Adam, minimizing ``loss_of(batch)``; then count the right answers."""
    batches = _toy_batches()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for b in batches:
            optimizer.zero_grad()
            loss_of(b).backward()
            optimizer.step()
    model.eval()
    return sum(((model(b["input_ids"], b["lengths"]) > 0).long() == b["labels"]).sum().item() for b in batches)


def test_a_few_batches_can_be_overfit():
    torch.manual_seed(0)
    model = SentimentClassifier(vocab_size=40, lr=0.01,
                                net={"embed_dim": 16, "hidden_dim": 16, "pooling": "mean_max", "dropout": 0.0,
                                     "embed_dropout": 0.0, "word_dropout": 0.0})
    assert _correct_after_training(model, lambda b: classification_loss(model(b["input_ids"], b["lengths"]),
                                                                         b["labels"]),
                                   epochs=60) == 64


def test_adversarial_training_adds_the_loss_of_shifted_embeddings_and_still_learns():
    torch.manual_seed(0)
    model = SentimentClassifier(vocab_size=40,
                                net={"embed_dim": 16, "hidden_dim": 16, "dropout": 0.0, "embed_dropout": 0.0,
                                     "word_dropout": 0.0})
    batch = _toy_batches(1)[0]
    clean = torch.nn.functional.binary_cross_entropy_with_logits(model(batch["input_ids"], batch["lengths"]),
                                                                 batch["labels"].float())
    loss, adversarial_loss, _ = adversarial_losses(model.net, batch["input_ids"], batch["lengths"], batch["labels"],
                                                   1.0)
    torch.testing.assert_close(loss, clean)
    assert adversarial_loss.item() > clean.item()  # the shift along the gradient raises the loss
    assert _correct_after_training(
        model, lambda b: sum(adversarial_losses(model.net, b["input_ids"], b["lengths"], b["labels"], 1.0)[:2]),
        epochs=20) == 64


@pytest.mark.parametrize("scale", [1.0, 0.25])  # 0.25: Lightning's gradient accumulation divides the loss
def test_adversarial_losses_give_the_gradients_of_the_two_losses_taken_plainly(scale):
    # the clean loss's gradients ride along a cheap term; they must equal a plain backward through both passes
    torch.manual_seed(0)
    net = SentimentNet(vocab_size=60, embed_dim=8, hidden_dim=8, bidirectional=True, pooling="attention",
                       embed_dropout=0.2, word_dropout=0.1).train()
    ids = torch.randint(2, 60, (6, 12))
    lengths = torch.tensor([12, 5, 3, 9, 12, 1])
    labels = torch.tensor([0, 1, 1, 0, 1, 0])

    def plain():
        input_ids, n = net.prepare(ids, lengths)
        x, _ = net.embed(input_ids, n, reversed_too=False)
        loss = classification_loss(net.read(x, input_ids, n), labels)
        (g,) = torch.autograd.grad(loss, x, retain_graph=True)
        shift = 2.0 * g / g.pow(2).sum(dim=(0, 2), keepdim=True).sqrt()
        return loss, classification_loss(net.read(x + shift, input_ids, n), labels)

    results = []
    for losses in (plain, lambda: adversarial_losses(net, ids, lengths, labels, 2.0)[:2]):
        net.zero_grad()
        torch.manual_seed(1)  # the same dropout noise for both
        loss, shifted = losses()
        (scale * (loss + shifted)).backward()
        results.append((loss.detach(), shifted.detach(), [p.grad.clone() for p in net.parameters()]))
    (loss_a, shifted_a, grads_a), (loss_b, shifted_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a)
    torch.testing.assert_close(shifted_b, shifted_a)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize("precision", ["32-true", pytest.param("bf16-mixed", marks=needs_bfloat16)])
def test_the_trainer_runs_adversarial_training_and_logs_both_losses(tmp_path, precision):
    import lightning as L

    torch.manual_seed(0)
    model = SentimentClassifier(vocab_size=40, adversarial=1.0,
                                net={"embed_dim": 8, "hidden_dim": 8, "bidirectional": True, "pooling": "attention"})
    loader = torch.utils.data.DataLoader(_toy_batches(), batch_size=None)
    trainer = L.Trainer(accelerator="cpu", precision=precision, max_steps=3, logger=False,
                        enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path, gradient_clip_val=1.0)
    before = model.net.embedding.weight.detach().clone()
    trainer.fit(model, loader)
    assert {"train/loss", "train/adversarial_loss"} <= set(trainer.callback_metrics)
    assert trainer.callback_metrics["train/adversarial_loss"] > 0
    assert not torch.equal(model.net.embedding.weight, before)


def test_a_plain_trainer_in_bfloat16_is_refused_in_one_line_where_the_cpu_lacks_it(tmp_path, monkeypatch):
    import lightning as L

    from sentiment.errors import DataError

    monkeypatch.setattr("sentiment.cpu.native_bfloat16", lambda: False)
    model = SentimentClassifier(vocab_size=40, net={"embed_dim": 8, "hidden_dim": 8})
    loader = torch.utils.data.DataLoader(_toy_batches(), batch_size=None)
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(DataError,
                       match=r"^precision bf16-mixed: this CPU has no native bfloat16 .*use precision='32-true'$"):
        trainer.fit(model, loader)


@pytest.mark.parametrize("every, adversarial_steps", [(1, [0, 1, 2, 3, 4, 5, 6]), (3, [0, 3, 6])])
def test_adversarial_every_takes_the_adversarial_loss_on_one_step_in_n(tmp_path, monkeypatch, every,
                                                                       adversarial_steps):
    import lightning as L

    import sentiment.training.classifier as classifier

    taken = []

    def recorded(*args, **kwargs):
        taken.append(model.global_step)
        return adversarial_losses(*args, **kwargs)

    monkeypatch.setattr(classifier, "adversarial_losses", recorded)
    torch.manual_seed(0)
    model = SentimentClassifier(vocab_size=40, adversarial=1.0, adversarial_every=every,
                                net={"embed_dim": 8, "hidden_dim": 8})
    trainer = L.Trainer(accelerator="cpu", max_steps=7, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, torch.utils.data.DataLoader(_toy_batches(), batch_size=None))
    assert taken == adversarial_steps
    with pytest.raises(ValueError, match="adversarial_every must be 1 or more"):
        SentimentClassifier(vocab_size=40, adversarial_every=0)


class _LearningRates:
    """Records the learning rate each training step runs with."""

    def __init__(self) -> None:
        import lightning as L

        class Recorder(L.Callback):
            def on_train_batch_start(inner, trainer, *args):
                self.values.append(trainer.optimizers[0].param_groups[0]["lr"])

        self.values: list[float] = []
        self.callback = Recorder()


@pytest.mark.parametrize("schedule", ["constant", "onecycle", "cosine"])
def test_learning_rate_schedules_warm_up_to_the_peak_and_end_near_zero(tmp_path, schedule):
    import lightning as L

    lr, epochs, warmup_ratio = 0.01, 5, 0.2
    batches = _toy_batches()
    steps = epochs * len(batches)  # the schedule is planned from the Trainer's own count of steps
    model = SentimentClassifier(vocab_size=40, adversarial=0.0, lr=lr, lr_schedule=schedule,
                                warmup_ratio=warmup_ratio, net={"embed_dim": 8, "hidden_dim": 8})
    rates = _LearningRates()
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[rates.callback])
    trainer.fit(model, torch.utils.data.DataLoader(batches, batch_size=None))
    seen = rates.values
    assert len(seen) == steps
    if schedule == "constant":
        assert seen == [lr] * steps
        return
    warmup = int(steps * warmup_ratio)
    peak = max(range(steps), key=seen.__getitem__)
    assert seen[peak] == pytest.approx(lr) and warmup - 1 <= peak <= warmup
    assert seen[0] <= lr / warmup  # it starts low ...
    assert all(a < b for a, b in zip(seen[:peak], seen[1 : peak + 1]))  # ... climbs to the peak ...
    assert all(a > b for a, b in zip(seen[peak + 1 :], seen[peak + 2 :]))  # ... then only falls ...
    assert seen[-1] < lr / 50  # ... to near zero at the last step, not part way


def test_label_smoothing_keeps_confidence_below_one_in_training_only():
    # separable toy data trained to convergence: without smoothing the scores run to 0 and 1; smoothing 0.2
    # trains towards targets 0.1 and 0.9, and evaluation's loss stays the plain one
    import warnings

    scores = {}
    for smoothing in (0.0, 0.2):
        torch.manual_seed(0)
        model = SentimentClassifier(vocab_size=40, adversarial=0.0, label_smoothing=smoothing,
                                    net={"embed_dim": 16, "hidden_dim": 16, "dropout": 0.0, "embed_dropout": 0.0,
                                         "word_dropout": 0.0})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log without a Trainer
            assert _correct_after_training(model, lambda b: model.training_step(b, 0), epochs=80) == 64
        batch = _toy_batches()[0]
        with torch.no_grad():
            probs = torch.sigmoid(model(batch["input_ids"], batch["lengths"]))
        scores[smoothing] = torch.where(batch["labels"] == 1, probs, 1 - probs)  # probability of the true label
    assert scores[0.0].min() > 0.98
    assert scores[0.2].max() < 0.95 and scores[0.2].mean() == pytest.approx(0.9, abs=0.03)
    logits, labels = torch.tensor([2.0, -1.0]), torch.tensor([1, 0])
    assert classification_loss(logits, labels, 0.2) == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.9, 0.1])).item())


def test_predict_api_returns_labels_and_scores_in_input_order():
    torch.manual_seed(0)
    model = SentimentClassifier(vocab_size=6, net={"embed_dim": 8, "hidden_dim": 8})
    model.text_encoder = TextEncoder(Vocab(["<pad>", "<unk>", "good", "bad", "film", "dull"]))
    model.train()
    texts = ["good film", "bad", "", "dull dull film", "film good bad", "good"]
    out = model.predict(texts, batch_size=4)  # two batches, the second shorter
    assert [set(o) for o in out] == [{"label", "score", "scores"}] * len(texts)
    alone = [model.predict(t)[0]["scores"]["positive"] for t in texts]  # each review alone: no batch to mix up
    assert [o["scores"]["positive"] for o in out] == pytest.approx(alone, abs=1e-6)
    assert len({round(s, 4) for s in alone}) == len(texts)  # distinct scores: any reordering would show
    assert all(o["label"] == ("positive" if o["scores"]["positive"] >= 0.5 else "negative") for o in out)
    assert all(o["score"] == o["scores"][o["label"]] for o in out)
    assert model.training  # predict() restores the mode it found


def test_predict_without_a_vocabulary_says_what_to_do():
    with pytest.raises(ValueError, match="no vocabulary"):
        SentimentClassifier(vocab_size=4).predict(["x"])


def test_explain_weighs_each_word_the_model_reads():
    encoder = TextEncoder(Vocab(["<pad>", "<unk>", "good", "bad", "film"]), max_length=6, truncation="head_tail")
    text = "A good film, not bad at all! Truly good"
    for pooling, method in (("attention", "attention"), ("mean_max", "occlusion")):
        model = SentimentClassifier(vocab_size=5, net={"embed_dim": 8, "hidden_dim": 8, "pooling": pooling})
        model.text_encoder = encoder
        out = model.explain(text)
        assert out["method"] == method
        assert [w["word"] for w in out["words"]] == ["a", "good", "film", "!", "truly", "good"]  # head + tail
        assert out["score"] == pytest.approx(model.predict([text])[0]["score"], abs=1e-6)
        if method == "attention":
            assert sum(w["weight"] for w in out["words"]) == pytest.approx(1, abs=1e-3)
        else:  # unknown words change nothing when hidden: they already read as <unk>
            assert [w["weight"] for w in out["words"] if w["word"] in ("a", "!", "truly")] == [0, 0, 0]
    assert model.explain("")["words"] == []


@needs_bfloat16
def test_logits_stay_float32_under_bfloat16_autocast():
    torch.manual_seed(0)
    net = SentimentNet(vocab_size=50, embed_dim=16, hidden_dim=16, pooling="attention").eval()
    ids, lengths = torch.randint(2, 50, (8, 20)), torch.randint(1, 21, (8,))
    with torch.no_grad():
        full = net(ids, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(ids, lengths)
    assert mixed.dtype == torch.float32  # scores written to CSV keep their digits
    torch.testing.assert_close(mixed, full, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_fast_dropout_drops_the_share_asked_and_keeps_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(400, 500)
    dropout = FastDropout(p).train()
    y = dropout(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(1 - p, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # kept values scaled by 1 / (1 - p)
    assert not torch.equal(y, dropout(x))  # a new mask each call
    torch.manual_seed(0)
    torch.testing.assert_close(dropout(x), y)  # drawn from torch's seeded generator
    assert dropout.eval()(x) is x
    assert FastDropout(1.0).train()(x).abs().sum() == 0


@pytest.mark.parametrize("shape, time_dim", [((4, 9), 1), ((4, 9, 3), 1), ((9, 4, 3), 0)])
def test_reverse_within_lengths_flips_each_review_and_leaves_padding(shape, time_dim):
    x = torch.randn(shape)
    lengths = torch.tensor([9, 4, 1, 6])
    out = reverse_within_lengths(x, lengths, time_dim)
    for b, n in enumerate(lengths.tolist()):
        review, result = (x[b], out[b]) if time_dim == 1 else (x[:, b], out[:, b])
        assert torch.equal(result[:n], review[:n].flip(0))
        assert torch.equal(result[n:], review[n:])


def test_reversing_ids_gives_the_backward_direction_the_same_input_as_reversing_embeddings():
    torch.manual_seed(0)
    net = SentimentNet(vocab_size=40, embed_dim=8, hidden_dim=6, bidirectional=True, pooling="attention").eval()
    ids = torch.randint(2, 40, (4, 15))
    lengths = torch.tensor([15, 9, 1, 4])
    ids[1, 9:] = ids[2, 1:] = ids[3, 4:] = 0
    embedded = net.embedding(ids.t())  # the encoder runs time-major
    slow, _ = net.encoder(embedded, lengths)
    fast, _ = net.encoder(embedded, lengths, net.embedding(reverse_within_lengths(ids, lengths).t()))
    assert torch.equal(fast, slow)


@needs_bfloat16
def test_kept_inference_casts_give_the_same_logits_and_end_with_training():
    torch.manual_seed(0)
    net = SentimentNet(vocab_size=40, embed_dim=8, hidden_dim=6, bidirectional=True, pooling="attention").eval()
    ids = torch.randint(2, 40, (3, 10))
    lengths = torch.tensor([10, 4, 7])

    def logits() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net(ids, lengths)

    plain = logits()
    net.keep_inference_casts()
    torch.testing.assert_close(logits(), plain, rtol=0, atol=0)  # a bfloat16 table: the same numbers
    assert net._casts and torch.bfloat16 in net._casts
    net.train()  # an optimizer may now change the weights in place, unseen (fused AdamW bumps no version)
    assert net._casts is None
    with torch.no_grad():
        net.embedding.weight[ids[0, 0]] += 1.0
    net.eval()
    assert not torch.equal(logits()[0], plain[0])


@pytest.mark.parametrize("cell", CELLS)
def test_the_encoder_matches_a_packed_bidirectional_rnn(cell):
    # padded sequences, each read within its own length: the same numbers as PyTorch's packed sequences
    torch.manual_seed(0)
    net = SentimentNet(vocab_size=40, embed_dim=8, hidden_dim=6, cell=cell, bidirectional=True).eval()
    ids = torch.randint(2, 40, (4, 15))
    lengths = torch.tensor([15, 9, 1, 4])
    rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(8, 6, batch_first=True, bidirectional=True)
    forward, backward = net.encoder.layers[0]
    for name, value in forward.named_parameters():
        setattr(rnn, name, value)
    for name, value in backward.named_parameters():
        setattr(rnn, name + "_reverse", value)
    embedded = net.embedding(ids)
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        out, final = rnn(packed)
        expected, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=15)
        h = final[0] if cell == "lstm" else final
        states, summary = net.encoder(embedded.transpose(0, 1), lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(states[:n, b], expected[b, :n])
    torch.testing.assert_close(summary, torch.cat([h[0], h[1]], dim=1))


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradients_are_clipped_for_the_fused_optimizer(algorithm):
    # Lightning 2.6 refuses to clip for fused optimizers under mixed precision; the classifier clips itself
    torch.manual_seed(0)
    model = SentimentClassifier(vocab_size=40, lr=1.0, net={"embed_dim": 8, "hidden_dim": 8})
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    batch = _toy_batches(1)[0]
    model.net(batch["input_ids"], batch["lengths"]).pow(2).sum().mul(100).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.nn.utils.get_total_norm(grads) > 1
    model.configure_gradient_clipping(optimizer, 0.5, algorithm)
    if algorithm == "norm":
        assert torch.nn.utils.get_total_norm(grads) == pytest.approx(0.5, rel=1e-4)
    else:
        assert max(g.abs().max() for g in grads) <= 0.5


def test_three_classes_learn_with_adversarial_training_label_smoothing_and_word_dropout():
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        labels = torch.randint(0, 3, (16,), generator=g)
        input_ids = torch.randint(5, 40, (16, 10), generator=g)
        input_ids[:, 3] = 2 + labels  # the class word
        batches.append({"input_ids": input_ids, "lengths": torch.full((16,), 10), "labels": labels})
    torch.manual_seed(0)
    model = SentimentClassifier(vocab_size=40, classes=["a", "b", "c"], adversarial=1.0, label_smoothing=0.1, lr=0.01,
                                net={"embed_dim": 16, "hidden_dim": 16, "word_dropout": 0.1})
    assert model.net(batches[0]["input_ids"], batches[0]["lengths"]).shape == (16, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        for _ in range(60):
            for b in batches:
                optimizer.zero_grad()
                model.training_step(b, 0).backward()
                optimizer.step()
    model.eval()
    with torch.no_grad():
        right = sum((model(b["input_ids"], b["lengths"]).argmax(1) == b["labels"]).sum().item() for b in batches)
    assert right == 64
