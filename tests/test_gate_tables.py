"""The float32 fast path: per-word gate tables give the network's own answers, and the Predictor uses them."""

import pytest
import torch
from conftest import make_buried_reviews, make_reviews

from sentiment.network.gate_tables import TABLES_FROM, GateTables
from sentiment.network.model import POOLINGS, SentimentNet
from sentiment.inference.predictor import Predictor

# every pooling the network has, both ways, and a bag with more classes: from the network's own list
NETWORKS = [*({"pooling": pooling, "bidirectional": both} for pooling in POOLINGS for both in (True, False)),
            {"bag_size": 50, "num_classes": 3},
            {"hidden_dim": 32, "embed_dim": 16, "num_classes": 4, "pooling": "mean_max", "bidirectional": False}]


def _batch(batch=37, steps=23, vocab=500, bag_size=0):
    torch.manual_seed(1)
    ids = torch.randint(2, vocab, (batch, steps))
    lengths = torch.randint(0, steps + 1, (batch,))
    lengths[:3] = torch.tensor([steps, 0, 1])  # a full row, an empty review (read as one padding token), one word
    ids[torch.arange(steps)[None] >= lengths[:, None]] = 0
    return ids, lengths, torch.randint(0, bag_size + 1, (batch, 9)) if bag_size else None


@pytest.mark.parametrize("settings", NETWORKS, ids=[",".join(f"{k}={v}" for k, v in s.items()) or "default"
                                                    for s in NETWORKS])
def test_gate_tables_give_the_network_s_logits(settings):
    torch.manual_seed(0)
    net = SentimentNet(500, **settings).eval()
    with torch.no_grad():  # weights far from their initial ones, every gate and bias in play
        for p in net.parameters():
            p.normal_(0, 0.3)
        if net.linear_bag is not None:
            net.linear_bag.scale.normal_()
    ids, lengths, bag = _batch(bag_size=settings.get("bag_size", 0))
    with torch.inference_mode():
        expected, got = net(ids, lengths, bag), GateTables(net)(ids, lengths, bag)
    assert expected.shape == got.shape and expected.std() > 0.1  # logits that differ from review to review
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_networks_the_tables_do_not_compute_are_left_to_pytorch():
    for settings in ({"cell": "gru"}, {"num_layers": 2}):
        assert not GateTables.supports(SentimentNet(50, **settings))
        with pytest.raises(ValueError, match="one LSTM layer"):
            GateTables(SentimentNet(50, **settings))


def test_the_predictor_answers_through_the_tables_as_pytorch_does(bagged):
    # a trained model with a bag of n-grams: the float32 fast path against PyTorch's own LSTM, review for review
    texts = [t for t, _ in make_buried_reviews(300, seed=11)] + [t for t, _ in make_reviews(100, seed=12)] + [""]
    fast = Predictor.from_checkpoint(bagged["best"], compute="float32", batch_size=64)
    plain = Predictor.from_checkpoint(bagged["best"], compute="float32-plain", batch_size=64)
    got, expected = fast.predict(texts), plain.predict(texts)
    assert fast._tables is not None and plain._tables is None  # the paths differ
    assert [a["label"] for a in got] == [a["label"] for a in expected]
    assert len({a["label"] for a in got}) == 2
    for a, b in zip(got, expected):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    assert "gate tables" in fast.kernel and "PyTorch's LSTM" in plain.kernel


def test_small_batches_go_through_pytorch_s_lstm(bagged):
    predictor = Predictor.from_checkpoint(bagged["best"], compute="float32")
    predictor.predict(["a fine film"] * (TABLES_FROM - 1))
    assert predictor._tables is None
    predictor.predict(["a fine film"] * TABLES_FROM)
    assert predictor._tables is not None
    # a server builds them before its first request; PyTorch's own kernel needs none
    assert Predictor.from_checkpoint(bagged["best"], compute="float32").ready()._tables is not None
    assert Predictor.from_checkpoint(bagged["best"], compute="float32-plain").ready()._tables is None


def test_compute_is_one_of_its_values():
    with pytest.raises(ValueError, match="compute must be one of bfloat16, float32, float32-plain"):
        Predictor(SentimentNet(10), encoder=None, compute="int8")
