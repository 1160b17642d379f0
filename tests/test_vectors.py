from pathlib import Path

import lightning as L
import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE, build_imdb_archive, make_review

import sentiment.data.vectors as vectors_module
from sentiment import SentimentClassifier, SentimentDataModule
from sentiment.errors import DataError
from sentiment.data.vectors import vectors_file


def _imdb_with_unlabelled(data_dir, n_unsup=300):
    import random

    rng = random.Random(3)
    extra = [(f"aclImdb/train/unsup/{i}_0.txt", make_review(rng, bool(i % 2)).encode()) for i in range(n_unsup)]
    data_dir.mkdir()
    return build_imdb_archive(data_dir / "aclImdb_v1.tar.gz", n_train=200, extra=extra)


class _EmbeddingAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.weights = pl_module.net.embedding.weight.detach().clone()


def test_word_vectors_are_learnt_once_from_training_and_unlabelled_reviews_and_start_the_embedding(
        tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    _imdb_with_unlabelled(data_dir)
    seen = {}
    real = vectors_module.train_vectors

    def spy(texts, vocab, dim, **kwargs):
        seen["texts"] = [text for part in texts for text in part]
        return real(texts, vocab, dim, **kwargs)

    monkeypatch.setattr(vectors_module, "train_vectors", spy)
    dm = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1}, unlabelled={"word_vectors": 16},
                             loader={"batch_size": 32})
    dm.prepare_data()
    reviews, _, _ = dm.corpus.read_splits()
    # the training split (not its validation share, not the test split) and the 300 unlabelled reviews + 1
    assert len(seen["texts"]) == len(reviews["train"]) + 301
    assert not set(reviews["val"].texts) & set(seen["texts"][:len(reviews["train"])])
    table = dm.embedding_vectors
    assert table.shape == (dm.vocab_size, 16) and not table[dm.pad_id].any()
    assert abs(float(table.std()) - 1.0) < 0.1  # the scale of a fresh embedding
    # learnt, not random: words used alike (the praise of the positive reviews, the blame of the negative
    # ones) point alike, more than praise and blame do (random vectors would give about 0 for both)
    unit = {w: table[i] / np.linalg.norm(table[i]) for w, i in dm.vocab.stoi.items() if w in POSITIVE + NEGATIVE}
    alike = [unit[a] @ unit[b] for group in (POSITIVE, NEGATIVE) for a in group for b in group if a < b and
             {a, b} <= unit.keys()]
    unlike = [unit[a] @ unit[b] for a in POSITIVE for b in NEGATIVE if {a, b} <= unit.keys()]
    assert np.mean(alike) > 0.5 and np.mean(alike) > np.mean(unlike) + 0.03, (np.mean(alike), np.mean(unlike))

    monkeypatch.setattr(vectors_module, "train_vectors", lambda *a, **k: pytest.fail("learnt again"))
    again = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1}, unlabelled={"word_vectors": 16},
                                loader={"batch_size": 32})
    again.prepare_data()  # cached beside the encoded reviews
    np.testing.assert_array_equal(again.embedding_vectors, table)

    model = SentimentClassifier(vocab_size=dm.vocab_size, net={"embed_dim": 16, "hidden_dim": 8})
    start = _EmbeddingAtStart()
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[start])
    trainer.fit(model, again)
    np.testing.assert_array_equal(start.weights.numpy(), table)


def test_vector_epochs_are_skip_gram_passes_each_count_learnt_once_and_kept_apart(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    _imdb_with_unlabelled(data_dir, n_unsup=20)
    passes = []
    real = vectors_module.train_vectors
    monkeypatch.setattr(vectors_module, "train_vectors",
                        lambda *a, epochs, **k: passes.append(epochs) or real(*a, epochs=epochs, **k))

    def data(**unlabelled):  # one tokenizing process, one gensim thread: the same vectors for the same passes
        return SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1}, loader={"num_proc": 1},
                                   unlabelled={"word_vectors": 8, **unlabelled})

    one, five = data(vector_epochs=1), data()
    one.prepare_data()
    five.prepare_data()
    one.prepare_data()  # found: not learnt again
    assert passes == [1, 5]
    assert one.cache_dir == five.cache_dir  # the same encoded reviews; the vectors beside them, one file a count
    assert sorted(p.name for p in one.cache_dir.glob("vectors-*")) == [vectors_file(one.cache_dir, 8, 1).name,
                                                                       vectors_file(one.cache_dir, 8, 5).name]
    np.testing.assert_array_equal(one.embedding_vectors, real(one.corpus.unlabelled_texts(), one.vocab, 8, seed=42,
                                                              epochs=1, workers=1, progress=False))
    assert not np.allclose(one.embedding_vectors, five.embedding_vectors)
    with pytest.raises(ValueError, match="^vector_epochs must be 1 or more, got 0$"):
        data(vector_epochs=0)


def test_word_vectors_of_another_width_than_the_embedding_are_one_line(tmp_path):
    data_dir = tmp_path / "data"
    _imdb_with_unlabelled(data_dir, n_unsup=20)
    dm = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1}, unlabelled={"word_vectors": 16})
    dm.prepare_data()
    model = SentimentClassifier(vocab_size=dm.vocab_size, net={"embed_dim": 8, "hidden_dim": 8})
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(DataError, match="^the word vectors have 16 dimensions but the model's embedding 8: set "
                                        "--data.unlabelled.word_vectors and --model.net.embed_dim alike$"):
        trainer.fit(model, dm)
    assert vectors_file(dm.cache_dir, 16, 5).is_file()
    assert not list(dm.cache_dir.glob(".vectors*"))  # no half-written file


def test_word_vectors_are_read_only_after_prepare_data_and_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    _imdb_with_unlabelled(data_dir, n_unsup=20)
    assert SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1}).embedding_vectors is None  # not asked
    with pytest.raises(ValueError, match="word_vectors must be 0"):
        SentimentDataModule(data_dir=str(data_dir), unlabelled={"word_vectors": -1})
    dm = SentimentDataModule(data_dir=str(data_dir), encoding={"min_freq": 1}, unlabelled={"word_vectors": 16})
    with pytest.raises(DataError, match=r"^word vectors are learnt by prepare_data\(\): call dm.prepare_data\(\)"):
        dm.embedding_vectors

    real_save = np.save

    def disk_full(f, table, *args, **kwargs):  # the vectors' file fills the disk; the encoded cache is written
        if isinstance(f, Path):
            return real_save(f, table, *args, **kwargs)
        f.write(b"\x93NUMPY half a table")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vectors_module.np, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        dm.prepare_data()
    cache = dm.cache_dir
    assert (cache / "vocab.json").is_file() and not list(cache.glob("*vectors*"))  # nothing half-written
    monkeypatch.undo()
    dm.prepare_data()  # and the next fit learns them whole
    assert dm.embedding_vectors.shape == (dm.vocab_size, 16)


def test_word_vectors_of_your_own_file_learn_from_its_training_split_read_from_a_spilled_file(tmp_path, monkeypatch):
    import random

    from conftest import write_csv

    rng = random.Random(5)
    rows = [(make_review(rng, i % 2 == 0), "pos" if i % 2 == 0 else "neg") for i in range(120)]
    train = write_csv(tmp_path / "train.csv", rows)
    seen = {}
    real = vectors_module.train_vectors

    def spy(texts, vocab, dim, **kwargs):
        seen["kinds"] = [type(part).__name__ for part in texts]
        seen["texts"] = [text for part in texts for text in part]
        return real(texts, vocab, dim, **kwargs)

    monkeypatch.setattr(vectors_module, "train_vectors", spy)
    dm = SentimentDataModule(data_dir=str(tmp_path / "data"), train_file=str(train), encoding={"min_freq": 1},
                             unlabelled={"word_vectors": 8})
    dm.prepare_data()
    reviews, _, _ = dm.corpus.read_splits()
    assert seen["kinds"][0] == "TextStore" and seen["texts"] == reviews["train"].texts  # not validation's share
    assert dm.embedding_vectors.shape == (dm.vocab_size, 8)
    assert [p.name for p in (tmp_path / "data" / ".sentiment_cache").iterdir()] == [dm.cache_dir.name]  # no spill left
