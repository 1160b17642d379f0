import hashlib
import json
import tarfile

import pytest
from conftest import ArchiveServer, add_bytes, build_imdb_archive, write_csv

from sentiment.errors import DataError
from sentiment.data.labels import LabelReader
from sentiment.data.sources import (
    DataWarning,
    download,
    iter_unlabelled,
    read_imdb,
    read_labelled,
)

# --- the user's own files ---------------------------------------------------------------------------------


def classes(reviews) -> tuple[tuple[str, ...], list[int]]:
    """The label set a training split gives, and each review's class."""
    reader = LabelReader.from_training(reviews.labels)
    return reader.labels, reader.read(reviews.labels, "f", reviews.where).tolist()


def test_a_file_read_a_few_rows_at_a_time_into_a_text_store_gives_the_same_reviews(tmp_path, monkeypatch):
    import sentiment.data.sources as sources

    texts = [f"review {i}: caf\u00e9, \"quoted\"\nüber 🎬" if i % 3 else f"plain {i}" for i in range(11)] + [""]
    labels = [["neg", "pos"][i % 2] for i in range(12)]
    files = [write_csv(tmp_path / "r.csv", list(zip(texts, labels))),
             tmp_path / "r.jsonl", tmp_path / "r.txt"]
    files[1].write_text("".join(json.dumps({"text": t, "label": y, "id": f"r{i}"}) + "\n"
                                for i, (t, y) in enumerate(zip(texts, labels))) + "\n")
    files[2].write_text("".join(f"__label__{y} {t.replace(chr(10), ' ')}\n\n" for t, y in zip(texts, labels)))
    monkeypatch.setattr(sources, "READ_CHUNK", 5)  # the file read in three chunks
    for path in files:
        whole = read_labelled(path)
        stored = read_labelled(path, spill=tmp_path / f"{path.suffix}.texts")
        assert isinstance(stored.texts, sources.TextStore) and len(stored) == len(whole) == 12
        assert list(stored.texts) == whole.texts and stored.texts[3:8] == whole.texts[3:8]
        assert stored.labels == whole.labels and stored.ids == whole.ids
        picked = stored.subset([7, 2, 11, 5])
        assert list(picked.texts) == [whole.texts[i] for i in (7, 2, 11, 5)] 
        assert picked.texts[1:3] == [whole.texts[2], whole.texts[11]]
        assert [picked.where[i] for i in range(4)] == [whole.where[i] for i in (7, 2, 11, 5)]
        assert picked.subset([3, 0]).texts[:] == [whole.texts[5], whole.texts[7]]
    assert read_labelled(files[2]).where[1] == "line 3"  # blank lines are skipped, and counted


def test_csv_tsv_and_jsonl_read_the_same_reviews(tmp_path):
    rows = [("Loved it!", "positive"), ("Dull, \"boring\"\nand long", "NEG"), ("ok", "1"), ("meh", "False")]
    csv_path = write_csv(tmp_path / "r.csv", rows)
    tsv_path = write_csv(tmp_path / "r.tsv", [(t.replace("\n", " "), y) for t, y in rows], delimiter="\t")
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows) + "\n")
    for path in (csv_path, jsonl):
        reviews = read_labelled(path)
        assert reviews.texts == [t for t, _ in rows]
        assert classes(reviews) == (("negative", "positive"), [1, 0, 1, 0])
    assert classes(read_labelled(tsv_path)) == (("negative", "positive"), [1, 0, 1, 0])


def test_kaggle_columns_and_custom_columns(tmp_path):
    kaggle = write_csv(tmp_path / "IMDB Dataset.csv", [("Great", "positive"), ("Bad", "negative")],
                       header=("review", "sentiment"))
    assert classes(read_labelled(kaggle))[1] == [1, 0]
    custom = write_csv(tmp_path / "c.csv", [("1", "Great", "true")], header=("id", "body", "y"))
    reviews = read_labelled(custom, text_column="body", label_column="y")
    assert reviews.texts == ["Great"] and reviews.ids == ["1"]


def test_jsonl_labels_may_be_json_booleans_and_numbers(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "a", "label": true}\n{"text": "b", "label": 0}\n')
    assert classes(read_labelled(path)) == (("negative", "positive"), [1, 0])


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_text(""), "the file is empty"),
    (lambda p: p.write_text("text,label\n"), "no rows below the header"),
    (lambda p: p.write_text("body,stars\nGreat,5\n"), "no text column 'text' (columns found: body, stars)"),
    (lambda p: p.write_text("text,label\nGreat,pos\nBad,neg\nOdd,1\n\"x,y\n"), "not valid CSV"),
])
def test_bad_csv_gets_a_one_line_error_naming_the_file(tmp_path, setup, message):
    path = tmp_path / "bad.csv"
    setup(path)
    with pytest.raises(DataError) as err:
        read_labelled(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": 1}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 2: not valid JSON"):
        read_labelled(path)
    path.write_text('{"text": "fine", "label": 1}\n{"text": "x", "label": "meh"}\n')
    reviews = read_labelled(path)  # any label may train; one outside a given set is named with its line
    with pytest.raises(DataError, match=r"^bad.jsonl: line 2: label 'meh' is not one of the labels negative, "
                                        r"positive$"):
        LabelReader(["negative", "positive"]).read(reviews.labels, "bad.jsonl", reviews.where)


def test_a_fasttext_file_is_read_as_fasttext_reads_it(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("__label__positive A great film , really .\n\n__label__negative  dull\tand long\n"
                    "so-so __label__neutral ending\n__label__positive __label__positive twice the same\n")
    reviews = read_labelled(path)
    assert reviews.texts == ["A great film , really .", "dull and long", "so-so ending", "twice the same"]
    assert list(reviews.labels) == ["positive", "negative", "neutral", "positive"]
    assert list(reviews.where) == ["line 1", "line 3", "line 4", "line 5"]
    chunks = [texts for texts, _ in iter_unlabelled(path)]  # predicting on it: every line, without its labels
    assert chunks == [["A great film , really .", "", "dull and long", "so-so ending", "twice the same"]]
    path.write_text("__label__a one\n__label__b __label__c two labels\n")
    reviews = read_labelled(path)
    assert reviews.labels == ["a", ["b", "c"]]  # a set, which --data.encoding.multi_label reads
    with pytest.raises(DataError, match=r"^train.txt: line 2: several labels \(b, c\); to train several labels per "
                                        r"text, set --data.encoding.multi_label true$"):
        LabelReader(["a", "b", "c"]).read(reviews.labels, "train.txt", reviews.where)
    path.write_text("__label__a one\nno label here\n")
    with pytest.raises(DataError, match=r"train.txt: line 2: no __label__ label"):
        read_labelled(path)


def test_a_fasttext_user_s_files_train_and_test_as_they_are(tmp_path):
    from conftest import make_reviews, run_cli

    for name, n, seed in (("train.txt", 300, 0), ("valid.txt", 60, 1)):
        lines = [f"__label__{'pos' if y else 'neg'} {text}" for text, y in make_reviews(n, seed=seed)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    assert run_cli("fit", "--data.train_file", str(tmp_path / "train.txt"), "--data.test_file",
                   str(tmp_path / "valid.txt"), "--data.data_dir", str(tmp_path / "data"), "--data.encoding.min_freq",
                   "1", "--data.loader.min_epoch_size", "0", "--model.net.hidden_dim", "8", "--model.net.embed_dim",
                   "8", "--model.adversarial", "0", "--trainer.max_epochs", "4", "--trainer.enable_progress_bar",
                   "false", "--trainer.default_root_dir", str(tmp_path)) == 0
    from sentiment.inference.predictor import Predictor

    best = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    predictor = Predictor.from_checkpoint(best)
    assert predictor.labels == ("negative", "positive")  # pos/neg read as the polarity words, as in CSV files
    texts, labels = zip(*make_reviews(60, seed=1))
    right = sum(a["label"] == ("positive" if y else "negative") for a, y in zip(predictor.predict(list(texts)), labels))
    assert right / 60 > 0.8


def test_plain_text_cannot_train_and_unknown_suffix_is_named(tmp_path):
    (tmp_path / "r.txt").write_text("a review\n")
    with pytest.raises(DataError, match="plain text has no labels"):
        read_labelled(tmp_path / "r.txt")
    (tmp_path / "r.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown file type '.xlsx'"):
        read_labelled(tmp_path / "r.xlsx")


def test_bytes_that_are_not_utf8_are_replaced_with_one_warning(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nCaf\xe9 cr\xe8me,pos\nna\xefve,neg\n".encode("latin-1"))
    with pytest.warns(DataWarning, match=r"latin1.csv: 3 byte sequence\(s\) that are not UTF-8") as record:
        reviews = read_labelled(path)
    assert len([w for w in record if issubclass(w.category, DataWarning)]) == 1
    assert reviews.texts[0] == "Caf\ufffd cr\ufffdme"


def test_unlabelled_text_keeps_every_line_in_order(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text("first\n\nthird\r\nfourth")
    chunks = list(iter_unlabelled(path, chunk_size=3))
    assert chunks == [(["first", "", "third"], None), (["fourth"], None)]


def test_unlabelled_csv_and_jsonl_carry_ids(tmp_path):
    csv_path = write_csv(tmp_path / "new.csv", [("7", "good"), ("9", "")], header=("id", "text"))
    assert list(iter_unlabelled(csv_path)) == [(["good", ""], ["7", "9"])]
    jsonl = tmp_path / "new.jsonl"
    jsonl.write_text('{"id": 3, "text": "x"}\n{"id": 4, "review": "y"}\n')
    assert list(iter_unlabelled(jsonl)) == [(["x", "y"], ["3", "4"])]


# --- IMDb ----------------------------------------------------------------------------------------------


def test_imdb_archive_and_folder_give_the_same_reviews(tmp_path):
    archive = build_imdb_archive(tmp_path / "aclImdb_v1.tar.gz", n_train=20, n_test=10)
    from_archive = read_imdb(archive)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    from_folder = read_imdb(tmp_path / "x" / "aclImdb")
    for split, n in (("train", 20), ("test", 10)):
        assert len(from_archive[split]) == n
        assert from_archive[split].texts == from_folder[split].texts
        assert from_archive[split].labels == from_folder[split].labels
        assert from_archive[split].labels.count("pos") == n // 2  # unsup/ is not read


def test_imdb_archive_without_a_test_split_reads_train(tmp_path):
    archive = build_imdb_archive(tmp_path / "a.tar.gz", n_train=10, n_test=0)
    assert set(read_imdb(archive)) == {"train"}


@pytest.mark.parametrize("name, kind, linkname", [
    ("../evil.txt", tarfile.REGTYPE, ""),
    ("/etc/evil.txt", tarfile.REGTYPE, ""),
    ("aclImdb/../../evil.txt", tarfile.REGTYPE, ""),
    ("aclImdb/link", tarfile.SYMTYPE, "../../etc/passwd"),
    ("aclImdb/abslink", tarfile.SYMTYPE, "/etc/passwd"),
    ("aclImdb/hard", tarfile.LNKTYPE, "../outside"),
])
def test_archive_entries_that_escape_the_folder_are_refused(tmp_path, name, kind, linkname):
    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_bytes(tar, "aclImdb/train/pos/0_9.txt", b"good")
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        tar.addfile(info)
    with pytest.raises(DataError, match="refusing the archive"):
        read_imdb(archive)
    assert not (tmp_path / "evil.txt").exists()


# --- downloads, against a server on 127.0.0.1 ------------------------------------------------------------


@pytest.fixture
def archive_bytes(tmp_path):
    return build_imdb_archive(tmp_path / "src.tar.gz", n_train=10, n_test=4).read_bytes()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_download_checks_the_checksum_and_renames_when_complete(tmp_path, archive_bytes):
    server = ArchiveServer(archive_bytes)
    try:
        dest = tmp_path / "data" / "aclImdb_v1.tar.gz"
        download(server.url, dest, hashlib.sha256(archive_bytes).hexdigest(), progress=False)
        assert dest.read_bytes() == archive_bytes
        assert _leftovers(dest.parent) == ["aclImdb_v1.tar.gz"]
    finally:
        server.close()


@pytest.mark.parametrize("truncate, sha, status, message", [
    (False, "0" * 64, 200, "SHA-256"),
    (True, None, 200, "the transfer stopped after"),
    (False, None, 404, "could not download"),
])
def test_failed_downloads_leave_nothing_behind(tmp_path, archive_bytes, truncate, sha, status, message):
    server = ArchiveServer(archive_bytes, truncate=truncate, status=status)
    try:
        data_dir = tmp_path / "data"
        with pytest.raises(DataError, match=message):
            download(server.url, data_dir / "aclImdb_v1.tar.gz", sha, progress=False)
        assert _leftovers(data_dir) == []
    finally:
        server.close()
