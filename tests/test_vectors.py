import lightning as L
import numpy as np
import pytest
import torch
from conftest import add_bytes, build_imdb_archive, make_review

import sentiment.data as data_module
from sentiment import SentimentClassifier, SentimentDataModule
from sentiment.errors import DataError
from sentiment.vectors import vectors_file


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
    real = data_module.train_vectors

    def spy(texts, vocab, dim, **kwargs):
        seen["texts"] = list(texts)
        return real(texts, vocab, dim, **kwargs)

    monkeypatch.setattr(data_module, "train_vectors", spy)
    dm = SentimentDataModule(data_dir=str(data_dir), min_freq=1, word_vectors=16, batch_size=32)
    dm.prepare_data()
    reviews, _, _ = dm.read_splits()
    # the training split (not its validation share, not the test split) and the 300 unlabelled reviews + 1
    assert len(seen["texts"]) == len(reviews["train"]) + 301
    assert not set(reviews["val"].texts) & set(seen["texts"][:len(reviews["train"])])
    table = dm.embedding_vectors
    assert table.shape == (dm.vocab_size, 16) and not table[dm.pad_id].any()
    assert abs(float(table.std()) - 1.0) < 0.1  # the scale of a fresh embedding

    monkeypatch.setattr(data_module, "train_vectors", lambda *a, **k: pytest.fail("learnt again"))
    again = SentimentDataModule(data_dir=str(data_dir), min_freq=1, word_vectors=16, batch_size=32)
    again.prepare_data()  # cached beside the encoded reviews
    np.testing.assert_array_equal(again.embedding_vectors, table)

    model = SentimentClassifier(vocab_size=dm.vocab_size, embed_dim=16, hidden_dim=8)
    start = _EmbeddingAtStart()
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[start])
    trainer.fit(model, again)
    np.testing.assert_array_equal(start.weights.numpy(), table)


def test_word_vectors_of_another_width_than_the_embedding_are_one_line(tmp_path):
    data_dir = tmp_path / "data"
    _imdb_with_unlabelled(data_dir, n_unsup=20)
    dm = SentimentDataModule(data_dir=str(data_dir), min_freq=1, word_vectors=16)
    dm.prepare_data()
    model = SentimentClassifier(vocab_size=dm.vocab_size, embed_dim=8, hidden_dim=8)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(DataError, match="^the word vectors have 16 dimensions but the model's embedding 8: set "
                                        "--data.word_vectors and --model.embed_dim alike$"):
        trainer.fit(model, dm)
    assert vectors_file(dm._cache, 16).is_file()
    assert not list(dm._cache.glob(".vectors*"))  # no half-written file


def test_word_vectors_need_prepare_data(tmp_path):
    data_dir = tmp_path / "data"
    _imdb_with_unlabelled(data_dir, n_unsup=0)
    dm = SentimentDataModule(data_dir=str(data_dir), min_freq=1)
    assert dm.embedding_vectors is None  # none asked for
    with pytest.raises(ValueError, match="word_vectors must be 0"):
        SentimentDataModule(data_dir=str(data_dir), word_vectors=-1)
    torch.manual_seed(0)
