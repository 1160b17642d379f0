"""Tokenization + vocabulary + encoding of a corpus, against Hugging Face `tokenizers` doing the same job."""

from __future__ import annotations

import numpy as np

from bench.common import Report, timed
from sentiment.cli import SentimentCLI
from sentiment.data.text import encode_corpus


def hf_tokenizers_pipeline(texts: list[str], max_size: int, min_freq: int, max_length: int) -> np.ndarray:
    """Hugging Face `tokenizers` doing the same job: lower-case and strip tags, a WordLevel vocabulary trained on
    the texts, Whitespace pre-tokenizer, encode_batch truncating and padding to ``max_length``."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex("<[^<>]*>"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=max_size, min_frequency=min_freq,
                                                             special_tokens=["<pad>", "<unk>"]))
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=0, pad_token="<pad>", length=max_length)
    return np.array([e.ids for e in tok.encode_batch(texts)], dtype=np.int32)


def bench_tokenize(texts: list[str], cli: SentimentCLI, report: Report, repeat: int) -> None:
    hp = cli.datamodule.encoding
    settings = {"min_freq": hp.min_freq, "max_size": hp.max_size, "max_length": hp.max_length}
    ours, _ = timed(lambda: encode_corpus(texts, truncation=hp.truncation, **settings), repeat)
    one, _ = timed(lambda: encode_corpus(texts, truncation=hp.truncation, num_proc=1, **settings), repeat)
    report.add(f"tokenize + vocabulary + encode {len(texts):,} reviews", f"{ours:.2f} s (1 process: {one:.2f} s)",
               "<= 2 s")
    try:
        theirs, _ = timed(lambda: hf_tokenizers_pipeline(texts, **settings), repeat)
    except ImportError:
        report.add("  vs Hugging Face tokenizers", "not installed (pip install tokenizers)", ">= 1.5x")
        return
    report.add("  vs Hugging Face `tokenizers` (WordLevel, same job)", f"{theirs:.2f} s", ">= 1.5x",
               f"{theirs / ours:.1f}x faster")
