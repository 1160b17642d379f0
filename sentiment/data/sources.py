"""Where reviews come from: the IMDb archive or folder (downloaded when absent) and the user's own files.

Every problem with an input is raised as a ``DataError`` whose one-line message names the file, and the
row or line where there is one, and what was expected.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import http.client
import json
import os
import posixpath
import re
import tarfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from sentiment.errors import DataError
from sentiment.io import atomic_open

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
IMDB_ARCHIVE = "aclImdb_v1.tar.gz"
IMDB_FOLDER = "aclImdb"

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}


class DataWarning(UserWarning):
    """Input that was read, but not as written (for example bytes that are not UTF-8)."""


class TextStore(Sequence[str]):
    """Texts kept in a file instead of memory: UTF-8 end to end, and where each one starts. A slice reads one stretch
    of the file; ``take`` picks texts by position (a validation split's rows) without reading them. A corpus of
    millions of reviews then costs 8 bytes a review in memory, not the texts."""

    def __init__(self, path: Path, starts: np.ndarray, picked: np.ndarray | None = None) -> None:
        self.path, self.starts, self.picked = Path(path), starts, picked

    def __len__(self) -> int:
        return len(self.starts) - 1 if self.picked is None else len(self.picked)

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                return [self[k] for k in range(lo, hi, step)]
            if self.picked is not None:
                return [self._read(k, k + 1)[0] for k in self.picked[lo:hi]]
            return self._read(lo, hi)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = i % len(self)
        return self._read(*((i, i + 1) if self.picked is None else (self.picked[i], self.picked[i] + 1)))[0]

    def __iter__(self):
        for lo in range(0, len(self), 4096):  # a stretch at a time, not a read a text
            yield from self[lo: lo + 4096]

    def _read(self, lo: int, hi: int) -> list[str]:
        ends = self.starts[lo: hi + 1] - self.starts[lo]
        with open(self.path, "rb") as f:
            f.seek(int(self.starts[lo]))
            data = f.read(int(ends[-1]))
        return [data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(ends[:-1].tolist(), ends[1:].tolist())]

    def take(self, idx: Sequence[int]) -> TextStore:
        """The texts at positions ``idx``, in that order, still in the file."""
        idx = np.asarray(idx, dtype=np.int64)
        return TextStore(self.path, self.starts, idx if self.picked is None else self.picked[idx])


class _TextSpill:
    """Writes texts to a ``TextStore``'s file as they are read."""

    def __init__(self, path: Path) -> None:
        self.path, self.file, self.starts = path, open(path, "wb"), [np.zeros(1, dtype=np.int64)]

    def extend(self, texts: Sequence[str]) -> None:
        data = [t.encode("utf-8", "surrogatepass") for t in texts]
        self.starts.append(self.starts[-1][-1:] + np.cumsum(np.fromiter(map(len, data), np.int64, len(data))))
        self.file.write(b"".join(data))

    def store(self) -> TextStore:
        self.file.close()
        return TextStore(self.path, np.concatenate(self.starts))


def _pick(items: Sequence | None, idx: Sequence[int]) -> Sequence | None:
    if items is None:
        return None
    return items.take(idx) if hasattr(items, "take") else [items[i] for i in idx]


@dataclass
class Reviews:
    """Review texts with their labels as written in the source (``sentiment.data.labels`` names the classes), the
    name of each review's row or file for error messages, and, where the source has them, ids. The texts are a list,
    or a ``TextStore`` when a file was read to be encoded (``read_labelled(..., spill=)``)."""

    texts: Sequence[str]
    labels: Sequence
    where: Sequence[str]
    ids: list[str] | None = field(default=None)
    groups: list[str] | None = field(default=None)  # what each review is about (IMDb: its movie), where known

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int]) -> Reviews:
        return Reviews(*(_pick(items, idx) for items in (self.texts, self.labels, self.where, self.ids, self.groups)))

    def joined(self, other: Reviews) -> Reviews:
        """These reviews, then ``other``'s (ids and groups kept where both have them)."""
        both = (lambda a, b: [*a, *b] if a is not None and b is not None else None)
        return Reviews([*self.texts, *other.texts], [*self.labels, *other.labels], [*self.where, *other.where],
                       both(self.ids, other.ids), both(self.groups, other.groups))


# --- text decoding that counts what it had to replace ----------------------------------------------------

_replaced = [0]


def _replace_counted(err: UnicodeDecodeError) -> tuple[str, int]:
    _replaced[0] += 1
    return "\ufffd", err.end


codecs.register_error("sentiment.replace_counted", _replace_counted)


@contextlib.contextmanager
def _warn_on_replacements(path: Path | str, charset: str = "utf-8") -> Iterator[None]:
    """Warn once per file, with a count, when bytes that are not text in ``charset`` were replaced."""
    before = _replaced[0]
    try:
        yield
    finally:
        n = _replaced[0] - before
        if n:
            warnings.warn(f"{path}: {n} byte sequence(s) that are not {charset.upper()} were replaced with U+FFFD "
                          "(another character set? --data.loader.charset names it)", DataWarning, stacklevel=3)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="sentiment.replace_counted")


# --- IMDb ------------------------------------------------------------------------------------------------

# aclImdb/<split>/<pos|neg>/<id>_<rating>.txt; line i of <split>/urls_<pos|neg>.txt is the IMDb page of the movie
# that review i reviews
_IMDB_LABELLED_OR_URLS = re.compile(r"^aclImdb/(?:(train|test)/(pos|neg)/([^/]+)\.txt"
                                    r"|(train|test)/urls_(pos|neg)\.txt)$")
_IMDB_TITLE = re.compile(r"/title/(tt\d+)")
Target = Literal["label", "rating"]  # pos/neg from the folder, or the star rating in each file name
IMDB_TARGETS = get_args(Target)


def _imdb_label(folder: str, name: str, target: str, where: str) -> str:
    if target == "label":
        return folder
    rating = name.rsplit("_", 1)[-1]
    if not rating.isdigit():
        raise DataError(f"{where}: no star rating in the file name (expected <id>_<rating>.txt)")
    return rating


def _review_order(name: str) -> tuple[int, str]:
    """IMDb files are named ``<id>_<rating>.txt``: order by id, numerically."""
    head = name.split("_", 1)[0]
    return (int(head), name) if head.isdigit() else (-1, name)


def find_imdb(data_dir: Path) -> Path | None:
    """The IMDb source already in ``data_dir``: an ``aclImdb/`` folder, else the official archive."""
    folder = data_dir / IMDB_FOLDER
    if (folder / "train").is_dir():
        return folder
    archive = data_dir / IMDB_ARCHIVE
    return archive if archive.is_file() else None


def source_signature(path: Path) -> list:
    """What identifies a source's content cheaply: size and mtime of a file, or of each IMDb class folder."""
    if path.is_file():
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]
    sig: list = [str(path.resolve())]
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            d = path / split / label
            if d.is_dir():
                sig.append([split, label, d.stat().st_mtime_ns, sum(1 for _ in os.scandir(d))])
            urls = path / split / f"urls_{label}.txt"
            if urls.is_file():
                sig.append([split, urls.name, urls.stat().st_size, urls.stat().st_mtime_ns])
    return sig


def check_member(member: tarfile.TarInfo, archive: Path | str) -> None:
    """Refuse an archive entry that would land outside the folder it is read into."""
    name = member.name
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise DataError(f"{archive}: entry {name!r} points outside the archive's folder; refusing the archive")
    if member.issym() or member.islnk():
        target = member.linkname
        if member.issym():
            target = posixpath.join(posixpath.dirname(name), target)
        target = posixpath.normpath(target)
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise DataError(f"{archive}: link {name!r} -> {member.linkname!r} points outside the archive's folder; "
                            "refusing the archive")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise DataError(f"{archive}: entry {name!r} is a device or pipe, not a file; refusing the archive")


def _imdb_files(source: Path, wanted: re.Pattern) -> Iterator[tuple[re.Match, bytes, str]]:
    """Every file of an ``aclImdb/`` folder or archive whose name (``aclImdb/train/pos/1_9.txt``) ``wanted``
    matches: the match, the bytes, and where it is (for messages). An archive is read in place, never
    extracted; any entry that would land outside its folder is refused."""
    if source.is_dir():
        for folder, _, names in os.walk(source):
            rel = Path(folder).relative_to(source).as_posix()
            prefix = IMDB_FOLDER if rel == "." else f"{IMDB_FOLDER}/{rel}"  # as the archive names it
            for name in names:
                if m := wanted.match(f"{prefix}/{name}"):
                    yield m, Path(folder, name).read_bytes(), os.path.join(folder, name)
        return
    try:
        with tarfile.open(source, "r|*") as tar:
            for member in tar:
                check_member(member, source)
                if member.isfile() and (m := wanted.match(member.name)):
                    yield m, tar.extractfile(member).read(), f"{source}: {member.name}"
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{source}: not a readable tar archive ({e})") from None


def read_imdb(source: Path, splits: Sequence[str] = ("train", "test"), target: str = "label") -> dict[str, Reviews]:
    """Read the labelled reviews of ``splits`` from an ``aclImdb/`` folder or archive (``unsup/`` is not read:
    ``read_imdb_unlabelled`` reads it).

    ``target``: ``label`` (``pos``/``neg``, from the folder) or ``rating`` (the stars in the file name,
    ``123_9.txt``: 9). Splits the source does not have are left out of the result. Where the split has its
    ``urls_pos.txt`` and ``urls_neg.txt``, each review's ``groups`` entry is its movie (``tt0453418``).
    """
    if target not in IMDB_TARGETS:
        raise DataError(f"target must be one of {', '.join(IMDB_TARGETS)}, got {target!r}")
    found: dict[str, list[tuple[str, tuple, str, str]]] = {s: [] for s in splits}
    urls: dict[tuple[str, str], list[str]] = {}  # (split, folder): the movie of each review id
    with _warn_on_replacements(source):
        for m, data, where in _imdb_files(source, _IMDB_LABELLED_OR_URLS):
            if m.group(1) in found:  # a review: split, folder, name
                label = _imdb_label(m.group(2), m.group(3), target, where)
                found[m.group(1)].append((m.group(2), _review_order(m.group(3)), _decode(data), label))
            elif m.group(4) in found:  # a urls file: split, folder
                urls[m.group(4), m.group(5)] = _decode(data).splitlines()
    out = {}
    for split, items in found.items():
        if items:
            items.sort(key=lambda x: (x[0], x[1]))  # neg before pos, then by review id: the same in any source
            out[split] = Reviews([t for _, _, t, _ in items], [label for _, _, _, label in items],
                                 [f"aclImdb/{split}/{folder}/{name}.txt" for folder, (_, name), _, _ in items],
                                 groups=_movies(items, split, urls))
    if "train" in splits and "train" not in out:
        raise DataError(f"{source}: no reviews under aclImdb/train/pos or aclImdb/train/neg")
    return out


_IMDB_UNSUP = re.compile(r"^aclImdb/train/unsup/([^/]+)\.txt$")


def read_imdb_unlabelled(source: Path) -> list[str]:
    """The unlabelled reviews of ``aclImdb/train/unsup/`` (50,000 in the official archive), in id order."""
    found = []
    with _warn_on_replacements(source):
        for m, data, _ in _imdb_files(source, _IMDB_UNSUP):
            found.append((_review_order(m.group(1)), _decode(data)))
    return [text for _, text in sorted(found)]


def _movies(items: list[tuple[str, tuple, str, str]], split: str, urls: dict[tuple[str, str], list[str]]
            ) -> list[str] | None:
    """The movie of every review, from the split's urls files; None where a file is missing or does not cover
    every review id (then nothing is known of the movies)."""
    movies = []
    for folder, (review_id, _), _, _ in items:
        lines = urls.get((split, folder))
        if lines is None or not 0 <= review_id < len(lines):
            return None
        title = _IMDB_TITLE.search(lines[review_id])
        movies.append(title.group(1) if title else lines[review_id].strip())
    return movies


def download(url: str, dest: Path, sha256: str | None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``: to a temporary name, checked (length, SHA-256), then renamed."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    received = 0
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                total = response.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {dest.name}",
                          disable=not progress) as bar:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"could not download {url} to {dest}: {reason} (put {dest.name} there yourself "
                            "to skip the download)") from None
        if total is not None and received != total:
            raise DataError(f"could not download {url}: the transfer stopped after {received} of {total} bytes")
        if sha256 and digest.hexdigest() != sha256.lower():
            raise DataError(f"could not download {url}: SHA-256 {digest.hexdigest()} differs from the expected "
                            f"{sha256}; the file was not kept")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest


# --- the user's own files ---------------------------------------------------------------------------------


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; expected .csv, .tsv, .jsonl or .txt")
    return fmt


def _check_readable(path: Path, charset: str = "utf-8") -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a .csv, .tsv, .jsonl or .txt file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: not readable (permission denied)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if not charset.lower().replace("_", "-").startswith(("utf-16", "utf-32", "utf16", "utf32")):
        with open(path, "rb") as f:
            at = f.read(8192).find(b"\0")  # text in a one-byte or UTF-8 character set has no NUL bytes
        if at >= 0:
            raise DataError(f"{path}: a binary file, not text (a NUL byte at byte {at}); expected a .csv, .tsv, "
                            ".jsonl or .txt file (in UTF-16? set --data.loader.charset)")


# Kaggle's "IMDB Dataset.csv" names its columns review and sentiment: read where text and label are absent
KAGGLE_COLUMNS = {"text": "review", "label": "sentiment"}


def _resolve_column(path: Path | str, columns: Sequence[str], wanted: str, what: str) -> str:
    """The column that holds ``what`` (``text`` or ``label``): ``wanted``, or Kaggle's name for it."""
    if wanted in columns:
        return wanted
    if KAGGLE_COLUMNS[what] in columns:
        return KAGGLE_COLUMNS[what]
    found = ", ".join(map(str, columns)) or "none"
    raise DataError(f"{path}: no {what} column {wanted!r} (columns found: {found}); "
                    f"set --data.{what}_column")


def frame_file(frame: Any, name: str, folder: Path, text_column: str, label_column: str | None) -> Path:
    """An in-memory table (a pandas DataFrame, or a mapping of columns to lists) as a CSV file in ``folder``, named by
    its content and written once, so that it is read, checked and cached as a file is; its columns are checked here,
    where a one-line error can name it (``the train DataFrame``)."""
    import pandas as pd

    where = f"the {name} DataFrame"
    try:
        frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: not a table of columns ({e})") from None
    columns = [str(c) for c in frame.columns]
    _resolve_column(where, columns, text_column, "text")
    if label_column is not None:
        _resolve_column(where, columns, label_column, "label")
    if len(frame) == 0:
        raise DataError(f"{where}: no rows")
    content = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
    path = folder / f"{name}-{hashlib.sha256(json.dumps(columns).encode() + content).hexdigest()[:16]}.csv"
    if not path.is_file():
        with atomic_open(path, "w", newline="", encoding="utf-8") as f:
            frame.to_csv(f, index=False)
    return path


def _open_text(path: Path, charset: str = "utf-8"):
    try:
        return open(path, encoding=charset, errors="sentiment.replace_counted", newline="")
    except LookupError:
        raise DataError(f"{path}: unknown character set {charset!r} (--data.loader.charset: utf-8, latin-1, "
                        "cp1252, utf-16, ...)") from None


@contextlib.contextmanager
def _table_errors(path: Path, fmt: str) -> Iterator[None]:
    """pandas' parse errors, as one line that names the file."""
    import pandas as pd  # here, not at the top: predicting from a text file, serving and exporting never need it

    try:
        yield
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: not valid {fmt.upper()}: {str(e).strip().splitlines()[-1]}") from None


def _read_table(f, fmt: str, **kwargs):
    import pandas as pd

    return pd.read_csv(f, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False, **kwargs)


def _iter_jsonl(path: Path, charset: str = "utf-8") -> Iterator[tuple[int, dict]]:
    with _open_text(path, charset) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


READ_CHUNK = 2_048  # rows parsed at a time: larger chunks cost pandas' parser memory, and no time (BENCHMARKS.md)


def read_labelled(path: str | Path, text_column: str = "text", label_column: str = "label",
                  id_column: str = "id", charset: str = "utf-8", spill: Path | None = None) -> Reviews:
    """Read a labelled CSV, TSV or JSONL file, or a ``.txt`` file in fastText's format, its text in ``charset``.

    With ``spill``, a file path, the texts are written there as they are read and come back as a ``TextStore``: the
    file is read ``READ_CHUNK`` rows at a time, and memory follows its labels, not its texts."""
    path = Path(path)
    _check_readable(path, charset)
    fmt = file_format(path)
    texts = _TextSpill(spill) if spill else []
    labels: list = []
    canonical: dict = {}  # one object per distinct label: millions of rows name a few labels
    ids: list | None = []
    where: Sequence[str] = _RowNames()
    with _warn_on_replacements(path, charset):
        if fmt == "txt":
            where, ids = _read_fasttext(path, charset, texts, labels), None
        elif fmt == "jsonl":
            lines, chunk = [], []
            for lineno, obj in _iter_jsonl(path, charset):
                keys = list(obj)
                text_key = _resolve_column(path, keys, text_column, "text")
                label_key = _resolve_column(path, keys, label_column, "label")
                chunk.append(str(obj[text_key]))
                if len(chunk) == READ_CHUNK:
                    texts.extend(chunk)
                    chunk = []
                label = obj[label_key]
                labels.append(canonical.setdefault(label, label) if isinstance(label, str) else label)
                if ids is not None and id_column in obj:
                    ids.append(str(obj[id_column]))
                else:
                    ids = None
                lines.append(lineno)
            texts.extend(chunk)
            if not lines:
                raise DataError(f"{path}: the file is empty")
            where = _LineNames(np.array(lines, dtype=np.int64))
        else:
            with _open_text(path, charset) as f, _table_errors(path, fmt), _read_table(f, fmt,
                                                                                       chunksize=READ_CHUNK) as chunks:
                for df in chunks:
                    if not len(df):
                        continue
                    cols = list(df.columns)
                    text_key = _resolve_column(path, cols, text_column, "text")
                    label_key = _resolve_column(path, cols, label_column, "label")
                    texts.extend(df[text_key].tolist())
                    labels.extend([canonical.setdefault(v, v) for v in df[label_key].tolist()])
                    if ids is not None and id_column in cols:
                        ids.extend(df[id_column].tolist())
                    else:
                        ids = None
            if not labels:
                raise DataError(f"{path}: no rows below the header")
    return Reviews(texts.store() if spill else texts, labels, where, ids)


FASTTEXT_LABEL = "__label__"  # fastText's label prefix: `__label__positive great film`


def split_fasttext(line: str) -> tuple[list[str], str]:
    """A line's fastText labels (its ``__label__X`` tokens, anywhere) and its text without them (their words would
    be read as the text's)."""
    if FASTTEXT_LABEL not in line:
        return [], line
    tokens = line.split()
    labels = [t[len(FASTTEXT_LABEL):] for t in tokens if t.startswith(FASTTEXT_LABEL)]
    return labels, " ".join(t for t in tokens if not t.startswith(FASTTEXT_LABEL))


def _read_fasttext(path: Path, charset: str, texts, labels: list) -> _LineNames:
    """A labelled file in fastText's format, as fastText reads it, into ``texts`` and ``labels``; the lines read.
    Every whitespace-separated token starting with ``__label__`` is a label, the others are the text; blank lines are
    skipped. A line with several labels has them as a list (read with ``multi_label``)."""
    lines, chunk = [], []
    canonical: dict = {}
    with _open_text(path, charset) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            found, text = split_fasttext(line)
            if not found:
                if not lines:  # the first line says which format the file is in
                    raise DataError(f"{path}: plain text has no labels; training and evaluation need CSV, TSV, "
                                    f"JSONL or fastText's format (lines starting with {FASTTEXT_LABEL}LABEL)")
                raise DataError(f"{path}: line {lineno}: no {FASTTEXT_LABEL} label; every line of a fastText file "
                                "needs one")
            distinct = list(dict.fromkeys(found))
            chunk.append(text)
            if len(chunk) == READ_CHUNK:
                texts.extend(chunk)
                chunk = []
            labels.append(canonical.setdefault(distinct[0], distinct[0]) if len(distinct) == 1 else distinct)
            lines.append(lineno)
    texts.extend(chunk)
    if not lines:
        raise DataError(f"{path}: the file is empty")
    return _LineNames(np.array(lines, dtype=np.int64))


class _RowNames:
    """Names rows of a table lazily: "row 7" is the seventh row below the header."""

    def __init__(self, rows: np.ndarray | None = None) -> None:
        self.rows = rows  # which rows, when a subset

    def __getitem__(self, i: int) -> str:
        return f"row {(i if self.rows is None else int(self.rows[i])) + 1}"

    def take(self, idx: Sequence[int]) -> _RowNames:
        idx = np.asarray(idx, dtype=np.int64)
        return _RowNames(idx if self.rows is None else self.rows[idx])


class _LineNames:
    """Names a file's records by their lines ("line 7"), kept as numbers."""

    def __init__(self, lines: np.ndarray) -> None:
        self.lines = lines

    def __getitem__(self, i: int) -> str:
        return f"line {int(self.lines[i])}"

    def __len__(self) -> int:
        return len(self.lines)

    def take(self, idx: Sequence[int]) -> _LineNames:
        return _LineNames(self.lines[np.asarray(idx, dtype=np.int64)])


def iter_unlabelled(path: str | Path, text_column: str = "text", id_column: str = "id",
                    chunk_size: int = 1024, charset: str = "utf-8") -> Iterator[tuple[list[str], list[str] | None]]:
    """Stream ``(texts, ids)`` chunks from a CSV, TSV, JSONL or plain-text file (one review per line).

    Memory stays flat however long the file; every row or line, empty ones included, yields one text.
    """
    path = Path(path)
    _check_readable(path, charset)
    fmt = file_format(path)
    with _warn_on_replacements(path, charset):
        if fmt == "txt":
            with _open_text(path, charset) as f:
                chunk: list[str] = []
                for line in f:  # a fastText file's labels are not text: they are dropped, as fastText does
                    chunk.append(split_fasttext(line.rstrip("\r\n"))[1])
                    if len(chunk) == chunk_size:
                        yield chunk, None
                        chunk = []
                if chunk:
                    yield chunk, None
        elif fmt == "jsonl":
            texts: list[str] = []
            ids: list = []
            for _, obj in _iter_jsonl(path, charset):
                key = _resolve_column(path, list(obj), text_column, "text")
                texts.append(str(obj[key]))
                ids.append(str(obj[id_column]) if id_column in obj else "")
                if len(texts) == chunk_size:
                    yield texts, ids
                    texts, ids = [], []
            if texts:
                yield texts, ids
        else:
            with _open_text(path, charset) as f, _table_errors(path, fmt), _read_table(f, fmt,
                                                                                       chunksize=chunk_size) as reader:
                for df in reader:
                    key = _resolve_column(path, list(df.columns), text_column, "text")
                    yield df[key].tolist(), (df[id_column].tolist() if id_column in df.columns else None)


def read_texts(path: str | Path, text_column: str = "text", charset: str = "utf-8", spill: Path | None = None
               ) -> Sequence[str]:
    """The texts of a file of unlabelled reviews (CSV, TSV, JSONL, or plain text, one review per line), streamed, empty
    ones left out; with ``spill``, a file path, kept there (``TextStore``)."""
    texts = _TextSpill(spill) if spill else []
    for chunk, _ in iter_unlabelled(path, text_column, charset=charset, chunk_size=READ_CHUNK):
        texts.extend([text for text in chunk if text.strip()])
    found = texts.store() if spill else texts
    if not len(found):
        raise DataError(f"{path}: no text to learn from (--data.unlabelled.file)")
    return found
