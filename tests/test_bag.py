"""The bag of n-grams over the whole review: hashing, the table, the log-count ratios, batches, and a bag model
from fit to every way it answers."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import BAG_FIT, FILLER, NEGATIVE, POSITIVE, make_buried_reviews, run_cli, write_csv

from sentiment.data.bag import NgramCounter, NgramTable, Words, log_count_ratios, review_hashes
from sentiment.data.datamodule import SentimentDataModule
from sentiment.network.model import LinearBag, SentimentNet
from sentiment.inference.predictor import Predictor
from sentiment.data.text import tokenize_bytes


def _tokens(*texts):
    return [t.split() for t in texts]


def test_review_hashes_are_each_reviews_distinct_ngrams_none_across_two_reviews():
    hashes, counts = review_hashes([[b"a", b"b", b"a", b"b"], [b"b"], [b"a"]], orders=2)
    assert counts.tolist() == [4, 1, 1]  # a, b, "a b", "b a"; then b; then a
    first = hashes[:4]
    assert len(set(first.tolist())) == 4 and list(first) == sorted(first)
    # the second review's "b" and the third's "a" are the first's; no bigram "b a" spans the two
    assert set(hashes[4:].tolist()) < set(first.tolist())
    assert review_hashes([[b"b", b"a"]], 2)[0].tolist() != review_hashes([[b"a", b"b"]], 2)[0].tolist()  # order counts
    three, _ = review_hashes([[b"a", b"b", b"c"]], 3)
    assert len(three) == 6  # a, b, c, ab, bc, abc


def test_the_table_keeps_ngrams_of_enough_reviews_and_finds_nothing_else():
    table = NgramTable.build(Words.of([[b"good", b"film"], [b"good", b"plot"], [b"bad", b"film"]]), 2, 2)
    assert len(table) == 2  # "good" and "film": each in two reviews; no bigram is
    ids, counts = table.encode([[b"good", b"film"], [b"unseen", b"words"], [b"film"]])
    assert counts.tolist() == [2, 0, 1]
    good, film = (table.encode([[w]])[0][0] for w in (b"good", b"film"))
    assert sorted(ids[:2].tolist()) == sorted([good, film]) == [1, 2] and ids[2] == film


def test_the_fast_table_and_encoding_follow_the_definition_across_chunks():
    # 2,500 reviews (two of the sorts' chunks of 2,048), some empty, from a small vocabulary: many repeats
    rng = np.random.default_rng(0)
    tokens = [[b"w%d" % i for i in rng.integers(0, 40, rng.integers(0, 30))] for _ in range(2500)]
    hashes, counts = review_hashes(tokens, 3)
    found, documents = np.unique(hashes, return_counts=True)
    table = NgramTable.build(Words.of(tokens[:2300]), 3, 3)
    head, head_documents = np.unique(review_hashes(tokens[:2300], 3)[0], return_counts=True)
    assert np.array_equal(table.hashes, head[head_documents >= 3]) and 0 < len(table) < len(found)
    ids, sizes = table.encode(tokens)
    known = table.lookup(hashes)
    owner = np.repeat(np.arange(len(tokens)), counts)
    assert np.array_equal(ids, known[known > 0]) and np.array_equal(sizes, np.bincount(owner[known > 0],
                                                                                         minlength=len(tokens)))
    position = np.searchsorted(table.hashes, hashes).clip(max=len(table) - 1)
    assert np.array_equal(known, np.where(table.hashes[position] == hashes, position + 1, 0))  # a binary search's


def test_counting_ngrams_a_chunk_at_a_time_into_spilled_parts_finds_the_same_table(tmp_path):
    # chunks of 700 reviews (their counts spill part by part, many n-grams in several chunks), 8 parts
    rng = np.random.default_rng(1)
    tokens = [[b"w%d" % i for i in rng.integers(0, 40, rng.integers(0, 30))] for _ in range(3000)]
    counter = NgramCounter(tmp_path / "counts", orders=3, parts=8)
    for lo in range(0, 3000, 700):
        counter.add(Words.of(tokens[lo: lo + 700]))
    assert len(list((tmp_path / "counts").iterdir())) == 8
    for min_count in (1, 3, 50):
        expected = NgramTable.build(Words.of(tokens), min_count, 3).hashes
        assert np.array_equal(counter.table(min_count), expected) and len(expected) > 0


def test_a_cache_prepared_a_few_reviews_at_a_time_on_several_processes_is_the_same(tmp_path, monkeypatch):
    import sentiment.data.writer as writer

    train = write_csv(tmp_path / "train.csv", make_buried_reviews(300))
    caches = []
    # one chunk in one process; then chunks of 37 tokenized 5 at a time, in three processes (a part's end, the
    # training split's end and the validation split's start inside chunks)
    for chunk, step, parts in ((100_000, 2048, 1), (37, 5, 3)):
        monkeypatch.setattr(writer, "CHUNK", chunk)
        monkeypatch.setattr(writer, "STEP", step)
        monkeypatch.setattr(writer, "worker_parts", lambda n, _, k=parts: [(n * i // k, n * (i + 1) // k)
                                                                          for i in range(k)])
        dm = SentimentDataModule(data_dir=str(tmp_path / f"d{parts}"), train_file=str(train),
                                 encoding={"min_freq": 1, "bag_min_count": 2})
        dm.prepare_data()
        caches.append(dm.cache_dir)
    names = sorted(p.name for p in caches[0].iterdir())
    assert names == sorted(p.name for p in caches[1].iterdir()) and "val.bag.npy" in names
    assert not [name for name in names if name.startswith(".")]  # the spilled texts, tokens and counts are gone
    for name in names:
        assert (caches[0] / name).read_bytes() == (caches[1] / name).read_bytes(), name


def test_a_table_too_large_for_32_bit_sort_keys_encodes_the_same_ngrams():
    # 2,048 reviews a sort need 11 bits, and over 2**21 n-grams 22 more: the keys are sorted as 64-bit integers
    rng = np.random.default_rng(1)
    tokens = [[b"w%d" % i for i in rng.integers(0, 40, rng.integers(0, 30))] for _ in range(2100)]
    small = NgramTable.build(Words.of(tokens), 3, 3)
    filler = rng.integers(0, 2**63, 2**21, dtype=np.uint64) << np.uint64(1) & ~np.uint64(2**11 - 1)
    large = NgramTable(np.unique(np.concatenate([small.hashes, filler])), 3)
    assert len(large).bit_length() + 11 > 32
    (small_ids, small_sizes), (large_ids, large_sizes) = small.encode(tokens), large.encode(tokens)
    assert np.array_equal(large_sizes, small_sizes) and small_sizes.sum() > 0
    assert np.array_equal(large.hashes[large_ids - 1], small.hashes[small_ids - 1])


def test_log_count_ratios_are_nbsvms_for_two_classes():
    # n-grams 1..3; reviews: [1, 2] negative, [1, 3] positive, [3] positive
    ids, counts, classes = np.array([1, 2, 1, 3, 3]), np.array([2, 2, 1]), np.array([0, 1, 1])
    r = log_count_ratios(ids, counts, classes, size=3, num_classes=2, alpha=1.0)
    p = np.array([1, 0, 2]) + 1.0  # presence among positive reviews, smoothed
    q = np.array([1, 1, 0]) + 1.0
    np.testing.assert_allclose(r[1:, 0], np.log(p / p.sum()) - np.log(q / q.sum()), rtol=1e-6)
    assert r.shape == (4, 1) and r[0, 0] == 0


def test_log_count_ratios_favour_the_class_that_has_the_ngram_among_three():
    ids, counts, classes = np.array([1, 2, 3, 1]), np.array([1, 1, 1, 1]), np.array([0, 1, 2, 0])
    r = log_count_ratios(ids, counts, classes, size=3, num_classes=3)
    assert r.shape == (4, 3)
    for gram, cls in ((1, 0), (2, 1), (3, 2)):
        assert r[gram].argmax() == cls and r[gram, cls] > 0 > r[gram, (cls + 1) % 3]


def test_the_table_round_trips_through_json_and_a_weights_only_checkpoint(tmp_path):
    table = NgramTable.build(Words.of([t.split() for t in (b"x y z", b"x y")]), 1, 3)
    again = NgramTable.from_dict(json.loads(json.dumps(table.to_dict())))
    torch.save({"t": table.to_dict()}, tmp_path / "t.ckpt")
    loaded = NgramTable.from_dict(torch.load(tmp_path / "t.ckpt", weights_only=True)["t"])
    for other in (again, loaded):
        assert other.orders == 3 and other.hashes.dtype == np.uint64 and np.array_equal(other.hashes, table.hashes)
    with pytest.raises(Exception, match="bag version 0"):
        NgramTable.from_dict({**table.to_dict(), "bag_version": 0})


def test_bag_logits_are_the_same_alone_or_beside_bigger_bags():
    torch.manual_seed(0)
    bag = LinearBag(10, 1, init=0.0).eval()
    with torch.no_grad():
        bag.weight.weight[1:].normal_()
        bag.scale[1:].uniform_(0.5, 2)
    alone = bag(torch.tensor([[3, 5]]))
    padded = bag(torch.tensor([[3, 5, 0, 0], [1, 2, 4, 9]]))
    torch.testing.assert_close(padded[0], alone[0])
    torch.testing.assert_close(alone[0, 0], (bag.weight.weight[[3, 5], 0] * bag.scale[[3, 5], 0]).sum())


def test_a_kept_bag_table_gives_the_padded_bags_logits_and_ends_with_training():
    torch.manual_seed(0)
    net = SentimentNet(vocab_size=20, embed_dim=4, hidden_dim=4, bag_size=12, num_classes=3).eval()
    with torch.no_grad():
        net.linear_bag.weight.weight[1:].normal_()
        net.linear_bag.scale[1:].uniform_(0.5, 2)
    # bags of every width, an empty one among them and one at the end: the sums must not run into each other
    bags = torch.tensor([[3, 5, 0, 0], [0, 0, 0, 0], [1, 2, 4, 12], [7, 0, 0, 0], [0, 0, 0, 0]])

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return net.bag_logits(bags)

    padded = logits()
    net.keep_inference_casts()
    torch.testing.assert_close(logits(), padded)
    assert "bag" in net._casts and torch.equal(padded[1], torch.zeros(3))
    net.train()  # the weights may now change: the kept table goes
    with torch.no_grad():
        net.linear_bag.weight.weight[7] += 1.0
    net.eval()
    assert not torch.allclose(logits()[3], padded[3])


def test_a_network_with_a_bag_asks_for_bag_ids():
    net = SentimentNet(vocab_size=20, embed_dim=4, hidden_dim=4, bag_size=5).eval()
    with pytest.raises(ValueError, match="pass bag_ids"):
        net(torch.tensor([[2, 3]]), torch.tensor([2]))


def test_a_batch_carries_every_ngram_of_each_whole_review(tmp_path):
    rows = make_buried_reviews(40)
    train = write_csv(tmp_path / "train.csv", rows)
    dm = SentimentDataModule(data_dir=str(tmp_path / "data"), train_file=str(train),
                             encoding={"max_length": 16, "min_freq": 1, "bag_ngrams": 2, "bag_min_count": 1,
                                       "val_fraction": 0.25},
                             loader={"batch_size": 8})
    dm.prepare_data()
    dm.setup("fit")
    assert dm.bag_size == len(dm.text_encoder.ngrams) > 0 and dm.bag_ratios.shape == (dm.bag_size + 1, 1)
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape[1] == 16  # the network reads 16 tokens of each 61-word review
    val = dm.corpus.read_splits()[0]["val"].texts[:8]
    expected_ids, expected_counts = dm.text_encoder.ngrams.encode([tokenize_bytes(t) for t in val])
    bags = batch["bag_ids"]
    assert (bags > 0).sum(1).tolist() == expected_counts.tolist()
    assert bags[bags > 0].tolist() == expected_ids.tolist()
    buried = [w for t in val for w in t.split() if w in POSITIVE + NEGATIVE]
    assert len(buried) == 8  # one in the middle of each review, none in its 16 tokens
    assert not set(dm.vocab.encode(buried)) & set(batch["input_ids"].flatten().tolist())
    verdicts = [w for w in buried if w in {"great", "awful", "superb", "dull", "bad", "fun"}]
    assert verdicts  # these are in the table: in their reviews' bags
    words = set(dm.text_encoder.ngrams.lookup(review_hashes([[w.encode()] for w in verdicts], 1)[0]).tolist())
    assert 0 not in words and words <= set(bags.flatten().tolist())


@pytest.mark.slow
def test_the_bag_reads_the_verdict_that_truncation_cuts_and_turns_off_with_bag_ngrams_0(bagged, tmp_path):
    from conftest import _events_acc

    assert _events_acc(bagged["root"]) > 0.9
    root = tmp_path / "off"
    assert run_cli("fit", "--data.train_file", str(bagged["train"]), "--data.encoding.bag_ngrams", "0",
                   "--data.data_dir", str(tmp_path / "data"), "--trainer.default_root_dir", str(root), *BAG_FIT) == 0
    assert _events_acc(root) < 0.75  # the 16 tokens read hold no verdict
    assert torch.load(root / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt",
                      weights_only=True)["hyper_parameters"]["bag_size"] == 0


def test_a_bag_model_answers_raw_text_as_sentiment_predict_and_its_batches_do(bagged, tmp_path):
    predictor = Predictor.from_checkpoint(bagged["best"], compute="float32")
    assert predictor.encoder.ngrams is not None and predictor.net.linear_bag is not None
    texts = [t for t, _ in make_buried_reviews(30, seed=9)] + ["", "great"]
    answers = predictor.predict(texts)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    assert run_cli("predict", "--ckpt_path", str(bagged["best"]), "--data.predict_file", str(tmp_path / "in.txt"),
                   "--prediction_writer.output_path", str(tmp_path / "out.csv"), "--trainer.precision", "32-true",
                   "--trainer.enable_progress_bar", "false") == 0
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert rows[-2]["label"] == rows[-2]["p_positive"] == ""  # the empty line: marked, not guessed
    del rows[-2], answers[-2]
    assert [r["label"] for r in rows] == [a["label"] for a in answers]
    assert [float(r["p_positive"]) for r in rows] == pytest.approx([a["scores"]["positive"] for a in answers],
                                                                   abs=1e-5)
    truth = [y for _, y in make_buried_reviews(30, seed=9)]
    assert np.mean([a["label"][:3] == y for a, y in zip(answers, truth)]) > 0.9
    # the cached batches (the data module's encoding) give the logits of raw text (the predictor's)
    dm = SentimentDataModule(data_dir=str(bagged["root"] / "data"), train_file=str(bagged["train"]),
                             test_file=str(bagged["test"]),
                             encoding={"max_length": 16, "min_freq": 1, "bag_ngrams": 2, "bag_min_count": 1})
    dm.prepare_data()
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    raw = predictor.encoder.model_inputs(dm.corpus.read_splits()[0]["test"].texts[: len(batch["lengths"])])
    for key in ("input_ids", "lengths", "bag_ids"):
        assert torch.equal(raw[key], batch[key]), key
    explained = predictor.explain(texts[0])
    assert explained["score"] == pytest.approx(answers[0]["score"], abs=1e-6)


@pytest.mark.parametrize("label", ["pos", "neg"])
def test_explain_splits_the_bags_logit_exactly_among_every_word_of_the_review(bagged, label):
    predictor = Predictor.from_checkpoint(bagged["best"], compute="float32")
    text = next(t for t, y in make_buried_reviews(20, seed=4) if y == label)
    out = predictor.explain(text)
    assert out["method"] == "ngrams" and out["label"] == {"pos": "positive", "neg": "negative"}[label]
    assert [w["word"] for w in out["words"]] == text.split()  # all 61 words, not the 16 the network reads
    assert len(out["read"]["words"]) == 16 and out["read"]["method"] == "attention"
    inputs = predictor.encoder.model_inputs([text])
    with torch.no_grad():
        bag = predictor.net.bag_logits(inputs["bag_ids"])[0, 0].item()
    toward = bag if label == "pos" else -bag
    assert sum(w["weight"] for w in out["words"]) == pytest.approx(toward, abs=1e-3) == out["bag_logit"]
    verdict = next(w for w in out["words"] if w["word"] not in FILLER)
    assert verdict["weight"] == max(w["weight"] for w in out["words"]) > 0  # the buried verdict weighs most


def test_a_bag_model_exports_to_onnx_with_its_bag_input(bagged, tmp_path):
    import onnxruntime as ort

    from sentiment.data.text import TextEncoder

    out = tmp_path / "bag.onnx"
    assert run_cli("export", "--ckpt_path", str(bagged["best"]), "--output", str(out)) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "lengths", "bag_ids"]
    encoder = TextEncoder.from_dict(json.loads(session.get_modelmeta().custom_metadata_map["text_encoder"]))
    predictor = Predictor.from_checkpoint(bagged["best"], compute="float32")
    assert encoder == predictor.encoder
    texts = [t for t, _ in make_buried_reviews(9, seed=3)]
    for batch in (texts, texts[:1], [t + " fun" * i for i, t in enumerate(texts)]):
        (probabilities,) = session.run(None, {k: v.numpy() for k, v in encoder.model_inputs(batch).items()})
        np.testing.assert_allclose(probabilities, [list(a["scores"].values()) for a in predictor.predict(batch)],
                                   atol=1e-4)


def test_a_three_class_bag_model_learns_and_explains_toward_its_label(tmp_path):
    from conftest import make_polar_reviews

    rows = make_polar_reviews(450)
    # the verdict words moved to the middle of 60 words of filler: beyond the network's 16 tokens
    buried = [(" ".join(["the"] * 25 + [w for w in t.rstrip(".").split() if w.lower() not in FILLER] + ["the"] * 25),
               y) for t, y in rows]
    train = write_csv(tmp_path / "train.csv", buried)
    root = tmp_path / "fit"
    assert run_cli("fit", "--data.train_file", str(train), "--data.encoding.bag_ngrams", "1", "--data.data_dir",
                   str(tmp_path / "data"), "--trainer.default_root_dir", str(root), *BAG_FIT) == 0
    from conftest import _events_acc

    assert _events_acc(root) > 0.9
    predictor = Predictor.from_checkpoint(root / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt")
    assert predictor.net.linear_bag.scale.shape[1] == 3  # a column of log-count ratios per class
    out = predictor.explain(" ".join(["the"] * 25 + ["mediocre", "average"] + ["the"] * 25))
    assert out["label"] == "neutral" and out["method"] == "ngrams"
    weights = {w["word"]: w["weight"] for w in out["words"]}
    assert weights["mediocre"] > 0 and weights["average"] > 0
