"""Raw text -> tokens -> vocabulary ids.

The tokenizer is defined by one regular expression (``tokenize_reference``); ``tokenize`` gives the same
tokens faster by taking a bytes fast path for ASCII reviews (most of IMDb), where ``bytes.translate`` and
``bytes.split`` run at memory speed. ``encode_corpus`` tokenizes, counts and encodes a whole corpus on
several processes at once.
"""

from __future__ import annotations

import contextlib
import gc
import html
import json
import multiprocessing
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain, compress, repeat
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from sentiment.data.bag import NgramTable
from sentiment.errors import DataError
from sentiment.io import atomic_write_text

TOKENIZER_VERSION = 1  # bump when tokenization changes: it is part of every cache key and checkpoint
Truncation = Literal["head", "tail", "head_tail"]
TRUNCATIONS = get_args(Truncation)

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1

# --- the tokenizer -------------------------------------------------------------------------------------

# A token is a run of letters/digits (any script, no underscore) with inner apostrophes ("don't"), or a
# lone "!" or "?" (they carry sentiment). HTML tags (IMDb's "<br />") are removed first.
_TOKEN_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[!?]")
_TAG_RE = re.compile(r"<[^<>]*>")
_APOSTROPHES = ("\u2019", "\u2018", "\u00b4", "`")  # read as "'"

# Fast path for ASCII text: keep [a-z0-9'!?], read a backtick as an apostrophe, every other byte as a space.
_KEEP = set(b"abcdefghijklmnopqrstuvwxyz0123456789'!?")
_BYTE_TABLE = bytes(c if c in _KEEP else ord("'") if c == ord("`") else ord(" ") for c in range(256))
_TAG_RE_B = re.compile(rb"<[^<>]*>")
_STRAY_APOSTROPHE_B = re.compile(rb"'(?:(?![a-z0-9])|(?<![a-z0-9]'))")  # leading literal: fast scan


def _normalize(text: str) -> str:
    """Lower-case, unescape HTML entities, unify apostrophes and Unicode forms."""
    text = text.lower()
    if "&" in text:
        text = html.unescape(text)
    if not text.isascii():
        for quote in _APOSTROPHES:
            if quote in text:
                text = text.replace(quote, "'")
        text = unicodedata.normalize("NFC", text)
    return text


def tokenize_reference(text: str) -> list[str]:
    """The definition of the tokenizer: a single regular expression over normalized, tag-free text."""
    text = _normalize(text).replace("`", "'")
    return _TOKEN_RE.findall(_TAG_RE.sub(" ", text))


def _tokenize_bytes(text: str, max_length: int | None = None, truncation: Truncation = "head_tail") -> list[bytes]:
    """``tokenize`` with UTF-8 bytes tokens: the form the corpus encoder counts and looks up.

    With ``max_length``, the tokens ``truncate`` would keep; ASCII text then splits off only those, not
    every word of a long review.
    """
    text = _normalize(text)
    if not text.isascii():
        tokens = [t.encode() for t in _TOKEN_RE.findall(_TAG_RE.sub(" ", text))]
        return tokens if max_length is None else list(truncate(tokens, max_length, truncation))
    b = text.encode("ascii")
    if b"<" in b:
        b = _TAG_RE_B.sub(b" ", b)
    b = b.translate(_BYTE_TABLE)
    if b"!" in b:
        b = b.replace(b"!", b" ! ")
    if b"?" in b:
        b = b.replace(b"?", b" ? ")
    if b"'" in b:  # an apostrophe not between two letters/digits separates: "'quoted'", "a''b"
        b = _STRAY_APOSTROPHE_B.sub(b" ", b)
    if max_length is None:
        return b.split()
    return _split_truncated(b, max_length, truncation)


def _split_truncated(b: bytes, max_length: int, truncation: Truncation) -> list[bytes]:
    """``truncate(b.split(), max_length, truncation)``, splitting off only the tokens kept."""
    n_head, n_tail = kept_ends(max_length, truncation)
    if not n_tail:
        return b.split(None, n_head)[:n_head]
    if not n_head:
        return b.rsplit(None, n_tail)[-n_tail:]
    parts = b.split(None, n_head)
    if len(parts) <= n_head:  # the whole review fits
        return parts
    tail = parts[n_head].rsplit(None, n_tail)
    return parts[:n_head] + (tail if len(tail) <= n_tail else tail[1:])


def tokenize_bytes(text: str) -> list[bytes]:
    """``tokenize``'s tokens as UTF-8 bytes, every one of them: what the bag of n-grams hashes."""
    return _tokenize_bytes(text)


def tokenize(text: str) -> list[str]:
    """Split a review into lower-case tokens.

    Removes HTML tags, keeps words with inner apostrophes (``don't``), numbers, letters of any script
    (``café``) and ``!``/``?`` as tokens of their own. Deterministic; identical to ``tokenize_reference``.
    """
    return [t.decode() for t in _tokenize_bytes(text)]


# --- truncation ----------------------------------------------------------------------------------------


def kept_ends(max_length: int, mode: Truncation = "head_tail") -> tuple[int, int]:
    """How many tokens a review longer than ``max_length`` keeps from its start and from its end."""
    if mode == "head":
        return max_length, 0
    if mode == "tail":
        return 0, max_length
    if mode == "head_tail":
        head = (max_length + 1) // 2
        return head, max_length - head
    raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {mode!r}")


def truncate(tokens: Sequence, max_length: int, mode: Truncation = "head_tail") -> Sequence:
    """Cut a sequence to ``max_length`` items.

    ``head`` keeps the start, ``tail`` the end, ``head_tail`` the first half and the last half: reviews
    state their verdict at the start and at the end.
    """
    n_head, n_tail = kept_ends(max_length, mode)
    if len(tokens) <= max_length:
        return tokens
    return tokens[:n_head] + tokens[len(tokens) - n_tail :] if n_tail else tokens[:n_head]


# --- the vocabulary ------------------------------------------------------------------------------------


class Vocab:
    """Token <-> id mapping with ``<pad>`` = 0 and ``<unk>`` = 1.

    Args:
        tokens: every token in id order; the first two must be ``<pad>`` and ``<unk>``.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {tokens[:2]}")
        self.itos: list[str] = tokens
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        if len(self.stoi) != len(tokens):
            raise ValueError("a vocabulary may not list a token twice")
        self._bstoi: dict[bytes, int] | None = None

    pad_id = PAD_ID
    unk_id = UNK_ID

    @classmethod
    def build(cls, counts: Mapping[str, int], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Most frequent tokens first, ties in alphabetical order; at most ``max_size`` ids in all."""
        ranked = sorted((-c, t) for t, c in counts.items() if c >= min_freq and t not in (PAD, UNK))
        kept = [t for _, t in ranked]
        if max_size is not None:
            kept = kept[: max(0, max_size - 2)]
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"

    @property
    def bytes_stoi(self) -> dict[bytes, int]:
        """Lookup by UTF-8 bytes, as the fast tokenizer produces them."""
        if self._bstoi is None:
            self._bstoi = {t.encode(): i for i, t in enumerate(self.itos)}
        return self._bstoi

    def encode(self, tokens: Iterable[str]) -> list[int]:
        get = self.stoi.get
        return [get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def save(self, path: str | os.PathLike) -> None:
        """Write a ``word2idx.json``-style mapping, atomically."""
        atomic_write_text(path, json.dumps(self.stoi, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Read a ``word2idx.json``-style mapping (token -> id, ids 0..n-1)."""
        path = Path(path)
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: no such vocabulary file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a JSON vocabulary ({e})") from None
        if not isinstance(mapping, dict) or not all(isinstance(i, int) for i in mapping.values()):
            raise DataError(f"{path}: expected a JSON object mapping each token to an integer id")
        tokens = sorted(mapping, key=mapping.__getitem__)
        if [mapping[t] for t in tokens] != list(range(len(tokens))):
            raise DataError(f"{path}: ids must be 0..{len(tokens) - 1}, each used once")
        # the original project's files may spell the specials differently: map them onto ours
        lowered = [t.lower() for t in tokens[:2]]
        if lowered == [PAD, UNK]:
            tokens[:2] = [PAD, UNK]
        return cls(tokens)


# --- raw text -> padded id tensors ---------------------------------------------------------------------


@dataclass
class TextEncoder:
    """Everything that turns raw reviews into model input: tokenizer, vocabulary and truncation, and for a model
    with a bag of n-grams (``sentiment.data.bag``) the n-grams it knows.

    It travels inside checkpoints (``to_dict``/``from_dict`` use plain lists, strings and tensors only), so a
    trained model reads raw text with no data module present.
    """

    vocab: Vocab
    max_length: int = 128
    truncation: Truncation = "head_tail"
    ngrams: NgramTable | None = None

    def encode_ids(self, text: str) -> list[int]:
        return self._ids(_tokenize_bytes(text, self.max_length, self.truncation))

    def _ids(self, tokens: Iterable[bytes]) -> list[int]:
        return list(map(self.vocab.bytes_stoi.get, tokens, repeat(UNK_ID)))

    def encode_words(self, text: str) -> tuple[list[str], list[int]]:
        """The tokens the model reads (after truncation) and their ids: what an explanation shows."""
        words = list(truncate(tokenize(text), self.max_length, self.truncation))
        return words, self.vocab.encode(words)

    def encode_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``input_ids`` (B x T, T = longest in batch, at least 1) and ``lengths`` (B)."""
        return _padded([self.encode_ids(t) for t in texts])

    def model_inputs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """What the network reads of a batch, named as in training batches: ``input_ids`` and ``lengths``
        (``encode_batch``) and, with an n-gram table, ``bag_ids`` (B x M, the known n-grams of each whole review,
        right-padded with 0)."""
        if self.ngrams is None:
            input_ids, lengths = self.encode_batch(texts)
            return {"input_ids": input_ids, "lengths": lengths}
        tokens = [_tokenize_bytes(t) for t in texts]  # every token once: the bag reads them all
        input_ids, lengths = _padded([self._ids(truncate(t, self.max_length, self.truncation)) for t in tokens])
        bags, counts = self.ngrams.encode(tokens)
        return {"input_ids": input_ids, "lengths": lengths, "bag_ids": padded(bags, counts)}

    def to_dict(self) -> dict:
        tokens = self.vocab.itos
        # One string rather than a list: torch's weights-only unpickler reads a 30,000-item list of strings
        # about 25x slower, and `sentiment predict` loads its checkpoint three times.
        packed = list(tokens) if any("\n" in t for t in tokens) else "\n".join(tokens)
        out = {"tokens": packed, "max_length": self.max_length, "truncation": self.truncation,
               "tokenizer_version": TOKENIZER_VERSION}
        if self.ngrams is not None:
            out["ngrams"] = self.ngrams.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> TextEncoder:
        if d.get("tokenizer_version") != TOKENIZER_VERSION:
            raise DataError(f"this text encoder was saved with tokenizer version {d.get('tokenizer_version')}; "
                            f"this sentiment release reads version {TOKENIZER_VERSION}")
        tokens = d["tokens"]
        ngrams = NgramTable.from_dict(d["ngrams"]) if d.get("ngrams") is not None else None
        return cls(Vocab(tokens.split("\n") if isinstance(tokens, str) else tokens), int(d["max_length"]),
                   d["truncation"], ngrams)


def _padded(rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids as right-padded ``input_ids`` (B x T, T = the longest row, at least 1) and ``lengths`` (B)."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return padded(flat, lengths), torch.from_numpy(lengths)


# --- whole-corpus encoding on several processes --------------------------------------------------------

_CHUNK = 2000  # reviews tokenized per step; bounds the memory held by untruncated token lists
_worker_texts: Sequence[str] = ()  # set before forking: children inherit it instead of unpickling it
_worker_state: dict = {}


@contextlib.contextmanager
def gc_paused():
    """Millions of fresh token lists make the cyclic garbage collector rescan in vain; none form cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _count_part(start: int, stop: int, count_mask: np.ndarray | None, max_length: int, truncation: str):
    """Tokenize and truncate texts[start:stop]; count the kept tokens of the masked reviews. The kept tokens wait for
    the vocabulary as ids of this part's own (4 bytes a token, where lists of bytes objects took ten times that)."""
    counts: Counter = Counter()
    local: dict[bytes, int] = {}  # each distinct token of this part, by its first appearance
    flats: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    with gc_paused():
        for lo in range(start, stop, _CHUNK):
            hi = min(lo + _CHUNK, stop)
            toks = [_tokenize_bytes(t, max_length, truncation) for t in _worker_texts[lo:hi]]
            counted = toks if count_mask is None else compress(toks, count_mask[lo:hi])
            counts.update(chain.from_iterable(counted))
            for token in dict.fromkeys(chain.from_iterable(toks)).keys() - local.keys():
                local[token] = len(local)
            n = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
            flats.append(np.fromiter(map(local.__getitem__, chain.from_iterable(toks)), dtype=np.int32,
                                     count=int(n.sum())))
            lengths.append(n)
    _worker_state["kept"] = (list(local), np.concatenate([np.zeros(0, dtype=np.int32), *flats]),
                             np.concatenate([np.zeros(0, dtype=np.int64), *lengths]))
    return counts


def _encode_part(bstoi: dict[bytes, int]) -> tuple[np.ndarray, np.ndarray]:
    tokens, flat, lengths = _worker_state.pop("kept")
    ids = np.fromiter(map(bstoi.get, tokens, repeat(UNK_ID)), dtype=np.int32, count=len(tokens))
    return lengths, ids[flat] if len(flat) else flat


def worker_count(n: int | None) -> int:
    """``n`` processes or threads, or one per available core when None."""
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, n)


def worker_parts(n: int, num_proc: int | None) -> list[tuple[int, int]]:
    """``n`` reviews as contiguous parts, one a process: ``num_proc`` (None: one per available core), fewer for a small
    corpus (forking pays only on a few thousand reviews), one where processes cannot fork."""
    procs = min(worker_count(num_proc), max(1, n // 4000))
    if "fork" not in multiprocessing.get_all_start_methods():
        procs = 1
    bounds = np.linspace(0, n, procs + 1).astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def encode_corpus(
    texts: Sequence[str],
    *,
    vocab: Vocab | None = None,
    count_mask: np.ndarray | None = None,
    min_freq: int = 1,
    max_size: int | None = None,
    max_length: int = 128,
    truncation: Truncation = "head_tail",
    num_proc: int | None = None,
) -> tuple[Vocab, np.ndarray, np.ndarray]:
    """Tokenize, build the vocabulary (unless given) and encode a corpus.

    Args:
        texts: the reviews.
        vocab: an existing vocabulary; when None one is built from the reviews selected by ``count_mask``,
            counting the tokens the model reads (those kept by truncation).
        count_mask: boolean per review: which reviews the vocabulary is counted on (all when None).
        min_freq: minimum count for a token to get an id.
        max_size: at most this many ids, ``<pad>`` and ``<unk>`` included.
        max_length: tokens kept per review.
        truncation: which tokens are kept of a longer review (``head``, ``tail``, ``head_tail``).
        num_proc: processes to use (None: one per available core; small corpora use one).

    Returns:
        ``(vocab, ids, lengths)``: ``ids`` is an int32 array N x ``max_length`` right-padded with 0.
    """
    global _worker_texts
    kept_ends(max_length, truncation)  # a bad mode fails here, not in a worker process
    n = len(texts)
    parts = worker_parts(n, num_proc)
    if vocab is not None:  # nothing to count
        count_mask = np.zeros(n, dtype=bool)
    args = (count_mask, max_length, truncation)
    _worker_texts = texts
    pools: list[ProcessPoolExecutor] = []
    try:
        with gc_paused():
            # one child per extra part; children inherit the texts; this process does the first part
            pools = [ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) for _ in parts[1:]]
            futures = [p.submit(_count_part, lo, hi, *args) for p, (lo, hi) in zip(pools, parts[1:])]
            counts = _count_part(*parts[0], *args)
            for f in futures:
                counts.update(f.result())
            if vocab is None:
                vocab = Vocab.build(_decode_counts(counts), min_freq, max_size)
            futures = [p.submit(_encode_part, vocab.bytes_stoi) for p in pools]
            results = [_encode_part(vocab.bytes_stoi)] + [f.result() for f in futures]
    finally:
        for p in pools:
            p.shutdown(cancel_futures=True)
        _worker_texts = ()
        _worker_state.clear()
    lengths = np.concatenate([r[0] for r in results])
    flat = np.concatenate([r[1] for r in results])
    return vocab, pad_rows(flat, lengths, max_length), lengths


def pad_rows(flat: np.ndarray, lengths: np.ndarray, width: int | None = None, dtype: np.dtype | None = None
             ) -> np.ndarray:
    """Rows of ``lengths`` ids, given end to end in ``flat``, as a len(lengths) x ``width`` array right-padded
    with ``<pad>`` (0), in ``dtype`` (default: ``flat``'s); ``width`` None: the longest row's (at least 1). Token ids
    and a bag's n-gram ids are padded alike."""
    if width is None:
        width = max(1, int(lengths.max())) if len(lengths) else 1
    out = np.zeros((len(lengths), width), dtype=dtype or flat.dtype)
    out[np.arange(width)[None, :] < lengths[:, None]] = flat
    return out


def padded(flat: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    """``pad_rows`` as an int64 tensor (what embeddings look up), each row as wide as the longest."""
    return torch.from_numpy(pad_rows(flat, lengths, dtype=np.int64))


def _decode_counts(counts: Counter) -> dict[str, int]:
    return {t.decode(): c for t, c in counts.items()}
