import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    REAL_ARCHIVE,
    ArchiveServer,
    build_archive_with_unlabelled,
    build_imdb_archive,
    make_reviews,
    write_csv,
)

import sentiment.data.corpus as data_module
import sentiment.data.vectors as vectors_module
import sentiment.data.writer as writer
from sentiment import SentimentDataModule
from sentiment.errors import DataError
from sentiment.inference.predictor import Predictor
from sentiment.data.sources import read_imdb_unlabelled
from sentiment.data.writer import save_from_files


def test_imdb_splits_and_batches(imdb_dir):
    dm = SentimentDataModule(data_dir=str(imdb_dir), loader={"batch_size": 16},
                             encoding={"max_length": 32, "min_freq": 1})
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.dataset("train")), len(dm.dataset("val")), len(dm.dataset("test"))) == (180, 20, 100)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "lengths", "labels", "bag_ids"}  # the bag of n-grams: by default
    assert batch["input_ids"].dtype == torch.long and batch["labels"].dtype == torch.long
    assert batch["input_ids"].shape[0] == 16 and batch["input_ids"].shape[1] <= 32
    assert dm.vocab_size == len(dm.vocab) and dm.pad_id == 0


def test_batches_pad_to_their_longest_review_with_zeros(tmp_path):
    rows = [("one two three", "pos"), ("one", "neg"), ("one two three four five six", "pos"), ("two", "neg")]
    path = write_csv(tmp_path / "t.csv", rows * 5)
    dm = SentimentDataModule(data_dir=str(tmp_path / "d"), train_file=str(path),
                             encoding={"val_fraction": 0.25, "max_length": 4, "truncation": "head", "min_freq": 1})
    dm.prepare_data()
    dm.setup("fit")
    train = dm.dataset("train")
    order = np.argsort(train.lengths)
    short = train.__getitems__([int(order[0]), int(order[1])])
    assert short["input_ids"].shape == (2, 1)  # two one-word reviews: width 1, not max_length
    mixed = train.__getitems__([int(order[0]), int(order[-1])])
    assert mixed["input_ids"].shape == (2, 4)  # the six-word review is cut to max_length
    assert mixed["lengths"].tolist() == [1, 4]
    assert mixed["input_ids"][0, 1:].tolist() == [0, 0, 0]


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    # each review starts with a word of its own: in the vocabulary only if the review is in training
    path = write_csv(tmp_path / "t.csv", [(f"own{i} film", "pos" if i % 2 else "neg") for i in range(200)])

    def split(seed):
        dm = SentimentDataModule(data_dir=str(tmp_path / "d"), train_file=str(path),
                                 encoding={"seed": seed, "min_freq": 1})
        dm.prepare_data()
        dm.setup("fit")
        own_words = {t for t in dm.vocab.itos if t.startswith("own")}
        return dm.dataset("train"), dm.dataset("val"), own_words

    train, val, own_words = split(1)
    assert (len(train), len(val), len(own_words)) == (180, 20, 180)
    assert (train.ids[:, 0] > 1).all()  # every training review's own word has an id
    assert (val.ids[:, 0] == 1).all()  # no validation review's own word has: no overlap
    assert split(1)[2] == own_words  # same seed, same split
    assert split(2)[2] != own_words  # another seed, another split


@pytest.mark.parametrize("by_movie", [True, False])
def test_imdb_validation_takes_whole_movies_named_in_the_archive(tmp_path, by_movie):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    build_imdb_archive(data_dir / "aclImdb_v1.tar.gz", n_train=400, movies=40)
    dm = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1, "val_by_movie": by_movie})
    reviews, classes, _ = dm.corpus.read_splits()
    train, val = set(reviews["train"].groups), set(reviews["val"].groups)
    assert len(reviews["val"]) == 40 and np.bincount(classes["val"]).tolist() == [20, 20]
    assert bool(train & val) is not by_movie  # at random, 40 reviews of 40 movies meet the rest's movies
    assert all(m.startswith("tt") for m in train | val)


def test_vocabulary_comes_from_the_training_split_only(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("good film", "pos"), ("bad film", "neg")] * 10)
    val = write_csv(tmp_path / "val.csv", [("zebra good", "pos"), ("zebra bad", "neg")])
    dm = SentimentDataModule(data_dir=str(tmp_path / "d"), train_file=str(train), val_file=str(val),
                             encoding={"min_freq": 1})
    dm.prepare_data()
    assert "zebra" not in dm.vocab.stoi
    assert dm.vocab.itos == ["<pad>", "<unk>", "film", "bad", "good"]


def test_the_vocabulary_is_read_only_after_prepare_data_and_never_downloads(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("asking for the vocabulary did heavy work")

    monkeypatch.setattr(data_module, "download", fail)
    monkeypatch.setattr(data_module, "write_cache", fail)
    dm = SentimentDataModule(data_dir=str(tmp_path / "empty"))  # IMDb, not there yet: it would be downloaded
    with pytest.raises(DataError, match=r"call dm.prepare_data\(\) first"):
        dm.vocab_size
    with pytest.raises(DataError, match=r"call prepare_data\(\) before setup\(\)"):
        dm.setup("fit")
    assert not (tmp_path / "empty").exists()


def test_second_prepare_and_setup_hit_the_cache(imdb_dir, monkeypatch):
    dm = SentimentDataModule(data_dir=str(imdb_dir))
    dm.prepare_data()
    dm.setup("fit")
    caches = list((imdb_dir / ".sentiment_cache").iterdir())
    assert len(caches) == 1 and not caches[0].name.startswith(".")  # no temporary folder left

    def fail(*args, **kwargs):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(data_module, "write_cache", fail)
    monkeypatch.setattr(data_module, "read_imdb", fail)
    again = SentimentDataModule(data_dir=str(imdb_dir))
    again.prepare_data()
    again.setup("fit")
    assert again.vocab == dm.vocab
    np.testing.assert_array_equal(again.dataset("val").ids, dm.dataset("val").ids)


def test_changing_an_encoding_setting_builds_a_new_cache(imdb_dir):
    for max_length in (16, 32):
        dm = SentimentDataModule(data_dir=str(imdb_dir), encoding={"max_length": max_length})
        dm.prepare_data()
    assert len(list((imdb_dir / ".sentiment_cache").iterdir())) == 2


def test_prepare_data_sets_no_state(imdb_dir):
    dm = SentimentDataModule(data_dir=str(imdb_dir))
    before = dict(vars(dm))
    dm.prepare_data()
    assert {k: v for k, v in vars(dm).items() if k in before} == before


def test_a_failed_encoding_leaves_no_cache(imdb_dir, monkeypatch):
    written = []

    def broken(path, *args, **kwargs):  # the disk fills after the vocabulary and the first split's ids are written
        if written:
            raise RuntimeError("disk full")
        written.append(path)
        save_from_files(path, *args, **kwargs)

    monkeypatch.setattr(writer, "save_from_files", broken)
    with pytest.raises(RuntimeError):
        SentimentDataModule(data_dir=str(imdb_dir)).prepare_data()
    assert written and list((imdb_dir / ".sentiment_cache").iterdir()) == []


def test_missing_test_split_is_a_clear_error(tmp_path, tiny_csv):
    dm = SentimentDataModule(data_dir=str(tmp_path / "d"), train_file=str(tiny_csv))
    dm.prepare_data()
    with pytest.raises(DataError, match="no test data: set --data.test_file"):
        dm.setup("test")


def test_single_class_training_data_is_refused(tmp_path):
    path = write_csv(tmp_path / "pos.csv", [("good", "pos")] * 20)
    with pytest.raises(DataError, match="every training review has label positive"):
        SentimentDataModule(data_dir=str(tmp_path / "d"), train_file=str(path)).prepare_data()


def test_no_imdb_and_no_download_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="holds neither aclImdb_v1.tar.gz nor aclImdb/"):
        SentimentDataModule(data_dir=str(tmp_path), imdb={"download": False}).prepare_data()


def test_imdb_is_downloaded_when_absent(tmp_path):
    body = build_imdb_archive(tmp_path / "src.tar.gz", n_train=40, n_test=10).read_bytes()
    server = ArchiveServer(body)
    try:
        dm = SentimentDataModule(data_dir=str(tmp_path / "data"),
                                 imdb={"sha256": hashlib.sha256(body).hexdigest(), "url": server.url})
        dm.prepare_data()
        dm.setup("fit")
        assert len(dm.dataset("train")) + len(dm.dataset("val")) == 40
        assert (tmp_path / "data" / "aclImdb_v1.tar.gz").read_bytes() == body
    finally:
        server.close()


def test_predict_batches_keep_order_size_and_empty_lines(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text("".join(f"review {i}\n" if i % 7 else "\n" for i in range(50)))
    dm = SentimentDataModule(data_dir=str(tmp_path / "none"), predict_file=str(path), loader={"predict_batch_size": 16})
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [len(b["text"]) for b in batches] == [16, 16, 16, 2]
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(50))
    assert batches[0]["text"][0] == "" and batches[0]["text"][1] == "review 1"
    assert not (tmp_path / "none").exists()  # predicting reads no training data


@pytest.mark.skipif(not REAL_ARCHIVE.exists(), reason="the IMDb training archive is not in ../shared/data")
def test_real_imdb_training_archive(tmp_path):
    """The official IMDb training split: 25,000 reviews, 12,500 per class, 128-token batches."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.symlink(REAL_ARCHIVE, data_dir / "aclImdb_v1.tar.gz")
    dm = SentimentDataModule(data_dir=str(data_dir), loader={"batch_size": 256})
    dm.prepare_data()
    dm.setup("fit")
    train, val = dm.dataset("train"), dm.dataset("val")
    assert (len(train), len(val)) == (22500, 2500)
    reviews, _, _ = dm.corpus.read_splits()  # every review of a movie on one side (urls_*.txt)
    assert not set(reviews["train"].groups) & set(reviews["val"].groups) and len(set(reviews["val"].groups)) > 300
    labels = np.concatenate([train.labels, val.labels])
    assert labels.sum() == 12500 and len(labels) == 25000
    assert dm.vocab_size == 30000
    for i, batch in enumerate(dm.train_dataloader()):
        assert batch["input_ids"].shape[0] <= 256 and batch["input_ids"].shape[1] <= 128
        assert int(batch["lengths"].max()) == batch["input_ids"].shape[1]
        if i == 5:
            break
    started = time.perf_counter()
    again = SentimentDataModule(data_dir=str(data_dir), loader={"batch_size": 256})
    again.prepare_data()
    again.setup("fit")
    assert again.vocab == dm.vocab
    print(f"cached prepare_data + setup: {time.perf_counter() - started:.3f} s")
    assert not any(p.name.startswith(".") for p in (data_dir / ".sentiment_cache").iterdir())
    with pytest.raises(DataError, match="no test split"):
        dm.setup("test")


@pytest.mark.slow
def test_two_processes_preparing_one_data_dir_at_once_leave_one_complete_cache(tmp_path):
    path = write_csv(tmp_path / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(6000)])
    code = ("import sys; from sentiment import SentimentDataModule; "
            f"dm = SentimentDataModule(data_dir={str(tmp_path / 'data')!r}, train_file={str(path)!r}, "
            "loader={'num_proc': 1}); "
            "dm.prepare_data(); dm.setup('fit'); print(len(dm.dataset('train')), dm.vocab_size)")

    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    assert outs[0][0] == outs[1][0]  # both see the same splits and vocabulary
    caches = list((tmp_path / "data" / ".sentiment_cache").iterdir())
    assert len(caches) == 1 and not caches[0].name.startswith(".")
    dm = SentimentDataModule(data_dir=str(tmp_path / "data"), train_file=str(path))
    dm.setup("fit")
    assert len(dm.dataset("train")) == 5400


def test_an_epoch_reads_a_small_training_split_several_whole_times(tmp_path):
    from sentiment.data.batches import EpochShuffle

    rows = list(range(30))
    sampler = EpochShuffle(rows, seed=3, min_rows=100)
    order = list(sampler)
    assert len(sampler) == len(order) == 120  # four whole passes: every row equally often
    assert [order[i * 30 : (i + 1) * 30] for i in range(4)] != [rows] * 4
    assert all(sorted(order[i * 30 : (i + 1) * 30]) == rows for i in range(4))
    sampler.set_epoch(1)
    assert list(sampler) != order and sorted(list(sampler)) == sorted(order)
    assert len(EpochShuffle(list(range(500)), seed=3, min_rows=100)) == 500  # a large split: one pass, as before
    # under DDP, the same order dealt out to the processes: every row of it once, equal shares
    from sentiment.data.batches import DistributedEpochShuffle

    shares = [DistributedEpochShuffle(rows, seed=3, min_rows=100, num_replicas=3, rank=r) for r in range(3)]
    for share in shares:
        share.set_epoch(1)
    dealt = [list(share) for share in shares]
    assert [len(d) for d in dealt] == [len(s) for s in shares] == [40, 40, 40]
    assert [row for i in range(40) for row in (dealt[0][i], dealt[1][i], dealt[2][i])] == list(sampler)
    path = write_csv(tmp_path / "t.csv", [("good film", "pos"), ("bad film", "neg")] * 50)
    dm = SentimentDataModule(data_dir=str(tmp_path / "d"), train_file=str(path), encoding={"min_freq": 1},
                             loader={"batch_size": 10, "min_epoch_size": 300})
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 4 * 9  # 90 training reviews, 4 passes, batches of 10


def test_pseudo_labels_add_the_unlabelled_reviews_a_model_is_sure_of_to_training(tmp_path, trained):
    data_dir = tmp_path / "data"
    truth = build_archive_with_unlabelled(data_dir)
    texts = read_imdb_unlabelled(data_dir / "aclImdb_v1.tar.gz")
    answers = Predictor.from_checkpoint(trained["best"]).predict(texts)
    confidence = sorted(a["score"] for a in answers)[len(answers) // 2]  # about half of them pass
    sure = [(t, a["label"], i) for i, (t, a) in enumerate(zip(texts, answers)) if a["score"] >= confidence]
    plain = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1})
    dm = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1},
                             unlabelled={"pseudo_labels": str(trained["best"]), "pseudo_confidence": confidence})
    dm.labeller = Predictor.from_checkpoint(trained["best"])
    base, _, _ = plain.corpus.read_splits()
    reviews, classes, reader = dm.corpus.read_splits()
    n = len(base["train"])
    assert 0 < len(sure) < len(texts)
    assert reviews["train"].texts[:n] == base["train"].texts and reviews["val"].texts == base["val"].texts
    assert reviews["train"].texts[n:] == [t for t, _, _ in sure]
    labels = [reader.labels[c] for c in classes["train"][n:]]
    assert labels == [label for _, label, _ in sure]
    # the model's labels, not random ones: it is right about the generated reviews it is sure of (text 0 is the
    # builder's own "unlabelled review", the generated ones follow)
    right = [label == ("positive" if truth[i - 1] else "negative") for label, (_, _, i) in zip(labels, sure) if i]
    assert sum(right) >= 0.9 * len(right)
    for module in (plain, dm):  # each has its own cache; training reads the labelled ones too
        module.prepare_data()
        module.setup("fit")
    assert len(dm.dataset("train")) == n + len(sure) and len(plain.dataset("train")) == n
    # the vocabulary counts the labelled reviews only (the unlabelled ones bring words of their own, with
    # min_freq 1): a taught model reads words as its teacher did
    assert dm.vocab.itos == plain.vocab.itos and dm.cache_dir != plain.cache_dir
    # the same model named by another path: the same cache
    elsewhere = f"{trained['best'].parent}/../{trained['best'].parent.name}/./best.ckpt"
    assert SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1},
                               unlabelled={"pseudo_labels": elsewhere,
                                           "pseudo_confidence": confidence}).cache_dir == dm.cache_dir


def test_pseudo_labelled_data_shares_the_word_vectors_of_its_labelled_data(tmp_path, trained, monkeypatch):
    data_dir = tmp_path / "data"
    build_archive_with_unlabelled(data_dir, 40)
    plain = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1}, unlabelled={"word_vectors": 8})
    taught = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1},
                                 unlabelled={"word_vectors": 8, "pseudo_labels": str(trained["best"]),
                                             "pseudo_confidence": 0.0})
    taught.labeller = Predictor.from_checkpoint(trained["best"])
    learnt = []
    real = vectors_module.train_vectors
    monkeypatch.setattr(vectors_module, "train_vectors", lambda *a, **k: learnt.append(1) or real(*a, **k))
    taught.prepare_data()  # the labelled data's cache and vectors are written first, then its own cache
    plain.prepare_data()
    assert len(learnt) == 1 and len(taught.vocab) == len(plain.vocab)
    np.testing.assert_array_equal(taught.embedding_vectors, plain.embedding_vectors)


def test_pseudo_labels_need_imdb_a_checkpoint_and_the_same_labels(tmp_path, trained):
    data_dir = tmp_path / "data"
    build_archive_with_unlabelled(data_dir, 4)
    teacher = Predictor.from_checkpoint(trained["best"])
    cases = [({"train_file": str(trained["root"] / "train.csv")}, teacher, "labels IMDb's unlabelled reviews"),
             ({"unlabelled": {"pseudo_labels": str(tmp_path / "none.ckpt")}}, teacher, "none.ckpt: no such checkpoint"),
             ({}, None, "pseudo labels need the model that gives them"),
             ({"encoding": {"target": "rating"}}, teacher,
              "the model's labels are negative, positive but the training data's are 1, 2")]
    for settings, labeller, message in cases:
        dm = SentimentDataModule(data_dir=str(data_dir),
                                 **{"unlabelled": {"pseudo_labels": str(trained["best"])}, **settings})
        dm.labeller = labeller
        with pytest.raises(DataError, match=message):
            dm.corpus.read_splits()
    with pytest.raises(ValueError, match="pseudo_confidence must be a probability"):
        SentimentDataModule(unlabelled={"pseudo_confidence": 1.5})


def test_the_data_room_imports_nothing_of_the_network_or_inference():
    # the data module and its corpus read and encode reviews; a model that labels reviews is handed to them
    code = ("import sys, sentiment.data.datamodule; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('sentiment.'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert {"sentiment.data.datamodule", "sentiment.data.corpus", "sentiment.data.settings"} <= loaded
    assert not loaded & {"sentiment.inference.predictor", "sentiment.inference.checkpoint",
                         "sentiment.network.gate_tables", "sentiment.network.model",
                         "sentiment.training.classifier"}


def test_from_pandas_trains_on_data_frames_as_on_files(tmp_path):
    import pandas as pd

    rows = [(t, "pos" if y else "neg") for t, y in make_reviews(200)]
    frame = pd.DataFrame(rows, columns=["text", "label"])
    dm = SentimentDataModule.from_pandas(frame, data_dir=str(tmp_path / "d"), encoding={"min_freq": 1})
    files = SentimentDataModule(data_dir=str(tmp_path / "f"), train_file=str(write_csv(tmp_path / "train.csv", rows)),
                                encoding={"min_freq": 1})
    for module in (dm, files):
        module.prepare_data()
        module.setup("fit")
    assert dm.vocab.itos == files.vocab.itos and dm.label_names == files.label_names == ["negative", "positive"]
    np.testing.assert_array_equal(dm.dataset("val").ids, files.dataset("val").ids)  # the same seeded split
    # the same frame again (another object): the same file and cache, nothing written anew
    written = Path(dm.corpus.train_file).stat().st_mtime_ns
    again = SentimentDataModule.from_pandas(frame.copy(), data_dir=str(tmp_path / "d"), encoding={"min_freq": 1})
    assert again.corpus.train_file == dm.corpus.train_file and again.cache_dir == dm.cache_dir
    assert Path(dm.corpus.train_file).stat().st_mtime_ns == written
    # columns as lists will do; another frame, another file; a test frame too
    texts, labels = [t for t, _ in rows[:100]], [y for _, y in rows[:100]]
    small = SentimentDataModule.from_pandas({"text": texts, "label": labels}, test=frame.iloc[:20],
                                            data_dir=str(tmp_path / "d"), encoding={"min_freq": 1})
    assert small.corpus.train_file != dm.corpus.train_file
    small.prepare_data()
    small.setup("test")
    assert len(small.dataset("test")) == 20
    # the same column rules and one-line errors as a file, naming the frame
    with pytest.raises(DataError, match=r"^the train DataFrame: no text column 'text' \(columns found: body, label\)"):
        SentimentDataModule.from_pandas(frame.rename(columns={"text": "body"}), data_dir=str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"^the val DataFrame: no label column 'label'"):
        SentimentDataModule.from_pandas(frame, val=frame[["text"]], data_dir=str(tmp_path / "d"))


def test_no_two_groups_of_settings_share_a_setting_name():
    # checkpoints of the flat layout name every setting at the top; load_data_settings puts each in the one group
    # that has it (a name in two groups once sent the loader's batch_size to the unlabelled reviews' group)
    import dataclasses

    from sentiment.data.settings import GROUPS

    names = [f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
