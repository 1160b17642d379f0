"""README's bad-input table, row by row: one line naming the problem and a non-zero exit, or a run that copes."""

import csv
import os
import subprocess
import sys

import pytest
from conftest import run_cli

from sentiment.errors import DataError

# (name, file contents, the one-line message expected) for `sentiment fit --data.train_file FILE`
BAD_TRAINING_FILES = [
    ("missing", None, "{path}: no such file"),
    ("a folder", "folder", "{path}: is a folder; expected a .csv, .tsv, .jsonl or .txt file"),
    ("empty", b"", "{path}: the file is empty"),
    ("header only", b"text,label\n", "{path}: no rows below the header"),
    ("wrong columns", b"body,stars\nfine film,5\n",
     "{path}: no text column 'text' (columns found: body, stars); set --data.text_column"),
    ("a class of one", b"text,label\ngood,pos\nfine,pos\nodd,maybe\nbad,neg\nawful,neg\n",
     "{path}: too few training reviews of maybe (1); every class needs at least two"),
    ("one class", b"text,label\ngood,pos\nfine,positive\n",
     "{path}: every training review has label positive; a classifier needs at least two classes"),
    ("bad jsonl", b'{"text": "good", "label": 1}\n{"text": \n', "{path}: line 2: not valid JSON"),
]


@pytest.mark.parametrize("name, content, message", BAD_TRAINING_FILES, ids=[row[0] for row in BAD_TRAINING_FILES])
def test_bad_training_files_get_one_line_and_exit_1(tmp_path, capsys, name, content, message):
    path = tmp_path / ("train.jsonl" if name == "bad jsonl" else "train.csv")
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    code = run_cli("fit", "--data.train_file", str(path), "--data.data_dir", str(tmp_path / "data"),
                   "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: " + message.format(path=path)), err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "data" / ".sentiment_cache").exists() or not any(
        (tmp_path / "data" / ".sentiment_cache").iterdir())  # nothing half-written


def test_verbose_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(Exception, match="no such file"):
        run_cli("fit", "--data.train_file", str(tmp_path / "nope.csv"), "--verbose", "--data.data_dir", str(tmp_path),
                "--trainer.default_root_dir", str(tmp_path))


@pytest.mark.parametrize("args, message", [
    (["--model.hiden_dim", "3"], "unrecognized arguments: --model.hiden_dim 3"),
    (["--config", "CONFIG"], "hiden_dim"),
])
def test_an_option_that_does_not_exist_is_named(tmp_path, capsys, args, message):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  hiden_dim: 3\n")
    code = run_cli("fit", *[str(config) if a == "CONFIG" else a for a in args])
    assert code == 2
    assert message in capsys.readouterr().err


def _predict(trained, tmp_path, path, *extra):
    out = tmp_path / "out.csv"
    code = run_cli("predict", "--ckpt_path", str(trained["best"]), "--data.predict_file", str(path),
                   "--prediction_writer.output_path", str(out), "--trainer.enable_progress_bar", "false", *extra)
    assert code == 0
    return list(csv.DictReader(open(out, encoding="utf-8")))


def test_text_that_is_not_utf8_is_replaced_with_a_warning(trained, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("A superb film, caf\xe9 scenes\nawful, dull\n".encode("latin-1"))
    with pytest.warns(UserWarning, match=r"latin1.txt: 1 byte sequence.* not UTF-8"):
        rows = _predict(trained, tmp_path, path)
    assert [r["label"] for r in rows] == ["positive", "negative"]


def test_a_10_mb_review_gets_its_row(trained, tmp_path):
    path = tmp_path / "huge.txt"
    path.write_text("short and superb\n" + "a wonderful brilliant film " * 400_000 + "\nawful\n")
    rows = _predict(trained, tmp_path, path)
    assert [(r["index"], r["label"]) for r in rows] == [("0", "positive"), ("1", "positive"), ("2", "negative")]


def _predict_peak_rss_mb(trained, path, out):
    """Peak memory of `sentiment predict` in its own process, in MB."""
    code = ("import resource, sys; from sentiment.cli import cli_main\n"
            "try:\n    cli_main(sys.argv[1:])\nfinally:\n"
            "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, "predict", "--ckpt_path", str(trained["best"]),
                           "--data.predict_file", str(path), "--data.loader.predict_batch_size", "4096",
                           "--prediction_writer.output_path", str(out), "--trainer.enable_progress_bar", "false"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stderr.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_long_predict_file_keeps_memory_flat_and_every_line(trained, tmp_path):
    lines = ["a superb film", "awful and dull", "", "the plot"] * 100_000
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text("\n".join(lines[:4_000]) + "\n")
    large.write_text("\n".join(lines) + "\n")
    base = _predict_peak_rss_mb(trained, small, tmp_path / "small.csv")
    peak = _predict_peak_rss_mb(trained, large, tmp_path / "large.csv")
    with open(tmp_path / "large.csv", encoding="utf-8") as f:
        rows = sum(1 for _ in f) - 1
    assert rows == 400_000
    # 100 times the input, (nearly) the same memory: rows are streamed in and out (holding the answers alone
    # would take hundreds of MB more)
    print(f"peak memory: {base} MB for 4,000 lines, {peak} MB for 400,000")
    assert peak - base < 100, (base, peak)


def test_a_binary_file_is_refused_in_one_line(trained, tmp_path, capsys):
    path = tmp_path / "reviews.csv"
    path.write_bytes(b"text\n" + bytes(range(256)) * 4)  # not text: a NUL byte at byte 5
    code = run_cli("predict", "--ckpt_path", str(trained["best"]), "--data.predict_file", str(path),
                   "--prediction_writer.output_path", str(tmp_path / "out.csv"),
                   "--trainer.enable_progress_bar", "false")
    assert code == 1
    assert capsys.readouterr().err == (f"error: {path}: a binary file, not text (a NUL byte at byte 5); expected a "
                                       ".csv, .tsv, .jsonl or .txt file (in UTF-16? set --data.loader.charset)\n")
    assert not (tmp_path / "out.csv").exists()


def test_files_in_another_character_set_are_read_as_it_says(trained, tmp_path):
    import warnings

    from sentiment.data.sources import read_labelled

    path = tmp_path / "latin1.txt"
    path.write_bytes("A superb film, caf\xe9 scenes\nawful, dull\n".encode("latin-1"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is replaced: no warning
        rows = _predict(trained, tmp_path, path, "--data.loader.charset", "latin-1")
    assert [r["label"] for r in rows] == ["positive", "negative"]
    labelled = tmp_path / "train.csv"
    labelled.write_bytes("text,label\ncaf\xe9 cr\xe8me,pos\n".encode("latin-1"))
    assert read_labelled(labelled, charset="latin-1").texts == ["caf\u00e9 cr\u00e8me"]
    utf16 = tmp_path / "utf16.csv"
    utf16.write_bytes("text,label\nna\u00efve,neg\n".encode("utf-16"))  # NUL bytes, and text all the same
    assert read_labelled(utf16, charset="utf-16").texts == ["na\u00efve"]
    with pytest.raises(DataError, match=r"unknown character set 'klingon'"):
        read_labelled(labelled, charset="klingon")
