import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentiment.data.text import (
    TRUNCATIONS,
    TextEncoder,
    Vocab,
    _tokenize_bytes,
    encode_corpus,
    tokenize,
    tokenize_reference,
    truncate,
)


@pytest.mark.parametrize("text, tokens", [
    ("Great movie!<br /><br />I loved it.", ["great", "movie", "!", "i", "loved", "it"]),
    ("I don't think so... Really?!", ["i", "don't", "think", "so", "really", "?", "!"]),
    ("A 10/10 film from 1999", ["a", "10", "10", "film", "from", "1999"]),
    ("Café au lait, NAÏVE and Ünïcode", ["café", "au", "lait", "naïve", "and", "ünïcode"]),
    ("<i>Italic</i> and <a href='x'>link</a>", ["italic", "and", "link"]),
    ("'quoted' words and rock'n'roll", ["quoted", "words", "and", "rock'n'roll"]),
    ("it’s the director´s cut, isn`t it", ["it's", "the", "director's", "cut", "isn't", "it"]),
    ("snake_case and A&amp;B", ["snake", "case", "and", "a", "b"]),
    ("", []),
])
def test_tokenize_cases(text, tokens):
    assert tokenize(text) == tokens
    assert tokenize_reference(text) == tokens


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZ09 '!?<>/_-.`´’é&;\nß")), max_size=60))
def test_fast_tokenizer_matches_the_reference(text):
    assert tokenize(text) == tokenize_reference(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab9 '!?<>/.&;\n")), max_size=80), st.integers(0, 9),
       st.sampled_from(TRUNCATIONS))
def test_truncating_tokenizer_keeps_what_truncate_keeps(text, max_length, mode):
    expected = truncate(tokenize_reference(text), max_length, mode)
    assert [t.decode() for t in _tokenize_bytes(text, max_length, mode)] == list(expected)
    if text.isascii():  # the non-ASCII path truncates a full token list; with é, ASCII splits off its ends
        assert [t.decode() for t in _tokenize_bytes(text + " é", max_length, mode)] == list(
            truncate(tokenize_reference(text + " é"), max_length, mode))


def test_the_vocabulary_and_ids_are_the_same_in_every_process():
    # caches and checkpoints are written by one process and read by another: nothing may depend on hash order
    code = ("from sentiment.data.text import encode_corpus; "
            "v, ids, _ = encode_corpus(['b a c', 'c b a d', 'e d', 'f g h'], max_length=4); "
            "print(v.itos, ids.tolist())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert outs == {"['<pad>', '<unk>', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'] "
                    "[[3, 2, 4, 0], [4, 3, 2, 5], [6, 5, 0, 0], [7, 8, 9, 0]]\n"}


def test_an_unknown_truncation_mode_is_named_wherever_it_is_given():
    for call in (lambda: truncate([1, 2], 5, "middle"), lambda: encode_corpus(["a"], truncation="middle"),
                 lambda: _tokenize_bytes("a b", 1, "middle")):
        with pytest.raises(ValueError, match="truncation must be one of head, tail, head_tail, got 'middle'"):
            call()


def test_vocab_orders_by_frequency_then_alphabet_and_caps_size():
    counts = {"b": 5, "a": 5, "c": 9, "d": 1, "e": 2}
    vocab = Vocab.build(counts, min_freq=2)
    assert vocab.itos == ["<pad>", "<unk>", "c", "a", "b", "e"]
    assert Vocab.build(counts, max_size=4).itos == ["<pad>", "<unk>", "c", "a"]
    assert vocab.encode(["a", "zzz", "c"]) == [3, 1, 2]
    assert vocab.decode([2, 3, 0]) == ["c", "a", "<pad>"]
    assert (vocab.pad_id, vocab.unk_id) == (0, 1)


def test_vocab_json_round_trip_is_a_word2idx_mapping(tmp_path):
    vocab = Vocab.build({"good": 3, "bad": 2, "café": 2})
    path = tmp_path / "word2idx.json"
    vocab.save(path)
    mapping = json.loads(path.read_text(encoding="utf-8"))
    assert mapping == {"<pad>": 0, "<unk>": 1, "good": 2, "bad": 3, "café": 4}
    assert Vocab.load(path) == vocab


def test_vocab_reads_the_original_projects_files(tmp_path):
    path = tmp_path / "word2idx.json"
    path.write_text(json.dumps({"<PAD>": 0, "<UNK>": 1, "movie": 2, "great": 3}))
    assert Vocab.load(path).itos == ["<pad>", "<unk>", "movie", "great"]


@pytest.mark.parametrize("mode, expected", [
    ("head", [0, 1, 2, 3, 4]),
    ("tail", [5, 6, 7, 8, 9]),
    ("head_tail", [0, 1, 2, 8, 9]),
])
def test_truncation_modes(mode, expected):
    assert truncate(list(range(10)), 5, mode) == expected
    assert truncate([1, 2], 5, mode) == [1, 2]


def test_head_tail_keeps_both_ends_of_a_review():
    tokens = ["verdict:", "great"] + ["filler"] * 300 + ["loved", "it"]
    kept = truncate(tokens, 128, "head_tail")
    assert len(kept) == 128 and kept[:2] == ["verdict:", "great"] and kept[-2:] == ["loved", "it"]


def test_encode_corpus_pads_truncates_and_counts_only_masked_reviews():
    texts = ["good good film", "bad film " * 100, "unseen words only"]
    mask = np.array([True, True, False])
    vocab, ids, lengths = encode_corpus(texts, count_mask=mask, max_length=8, truncation="head", num_proc=1)
    assert "unseen" not in vocab.stoi and "good" in vocab.stoi
    assert ids.shape == (3, 8) and ids.dtype == np.int32
    assert lengths.tolist() == [3, 8, 3]
    assert ids[0, 3:].tolist() == [0] * 5  # right-padded with <pad>
    assert ids[2, :3].tolist() == [1, 1, 1]  # unknown words
    assert vocab.decode(ids[1].tolist()) == ["bad", "film"] * 4


def test_encode_corpus_gives_the_same_result_on_several_processes():
    texts = [f"review {i} was {'great' if i % 3 else 'awful'} ! word{i % 50}" for i in range(9000)]
    v1, ids1, len1 = encode_corpus(texts, num_proc=1)
    v2, ids2, len2 = encode_corpus(texts, num_proc=2)
    assert v1 == v2
    np.testing.assert_array_equal(ids1, ids2)
    np.testing.assert_array_equal(len1, len2)


def test_text_encoder_batches_and_round_trips_through_a_plain_dict():
    encoder = TextEncoder(Vocab.build({"good": 2, "film": 2}), max_length=4, truncation="head")
    input_ids, lengths = encoder.encode_batch(["good film", "", "good good good good good"])
    assert input_ids.tolist() == [[3, 2, 0, 0], [0, 0, 0, 0], [3, 3, 3, 3]]  # ties: "film" < "good"
    assert lengths.tolist() == [2, 0, 4]
    restored = TextEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert restored == encoder


def test_text_encoder_packs_its_tokens_into_one_string_and_reads_the_list_form_too():
    encoder = TextEncoder(Vocab.build({"good": 2, "film": 2}), max_length=4, truncation="head")
    saved = encoder.to_dict()
    assert saved["tokens"] == "<pad>\n<unk>\nfilm\ngood"  # fast to unpickle: checkpoints load quickly
    assert TextEncoder.from_dict({**saved, "tokens": ["<pad>", "<unk>", "film", "good"]}) == encoder
    odd = TextEncoder(Vocab(["<pad>", "<unk>", "two\nlines"]), max_length=4)  # built by hand, not by the tokenizer
    assert TextEncoder.from_dict(odd.to_dict()) == odd
