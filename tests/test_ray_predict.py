"""scripts/ray_predict.py: batch prediction with Ray Data on a local Ray instance, as README shows it."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_reviews

from sentiment.inference.predictor import Predictor

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ray_predict.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_ray_data_answers_every_row_of_a_folder_of_files_as_the_predictor_does(trained, tmp_path):
    reviews = [text for text, _ in make_reviews(300, seed=11)]
    reviews[17] = ""  # an empty review: its row is kept, its answer cells empty
    inputs = tmp_path / "in"
    inputs.mkdir()
    for part in range(3):  # three files: three blocks, read, answered and written one at a time
        with open(inputs / f"part{part}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text"])
            writer.writerows((f"{i:04d}", reviews[i]) for i in range(part * 100, part * 100 + 100))
    out = tmp_path / "out"
    done = run_script("--checkpoint", str(trained["best"]), "--input", str(inputs), "--output", str(out),
                      "--batch_size", "40")
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted(out.glob("*.csv"))
    assert len(files) >= 3
    answers = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files]).set_index("id")
    assert sorted(answers.index) == [f"{i:04d}" for i in range(300)]  # every row once, ids as written
    assert list(answers.columns) == ["text", "label", "score", "p_negative", "p_positive"]
    expected = Predictor.from_checkpoint(trained["best"]).predict(reviews)
    for i in (0, 99, 100, 201, 299):
        row = answers.loc[f"{i:04d}"]
        assert row["text"] == reviews[i] and row["label"] == expected[i]["label"]
        assert abs(float(row["p_positive"]) - expected[i]["scores"]["positive"]) < 1e-5
    assert (answers.loc["0017", ["label", "score", "p_positive"]] == "").all()
    labels = answers["label"][answers["text"] != ""]
    assert set(labels) == {"positive", "negative"}


@pytest.mark.slow
def test_ray_data_reads_json_lines_and_names_a_missing_text_column(trained, tmp_path):
    lines = tmp_path / "in.jsonl"
    lines.write_text("".join(json.dumps({"body": t, "n": i}) + "\n" for i, (t, _) in
                             enumerate(make_reviews(30, seed=4))))
    done = run_script("--checkpoint", str(trained["best"]), "--input", str(lines), "--output", str(tmp_path / "a"),
                      "--text_column", "body")
    assert done.returncode == 0, done.stderr[-3000:]
    answers = pd.concat(pd.read_csv(f) for f in (tmp_path / "a").glob("*.csv"))
    assert len(answers) == 30 and {"body", "n", "label", "p_positive"} <= set(answers.columns)
    failed = run_script("--checkpoint", str(trained["best"]), "--input", str(lines), "--output", str(tmp_path / "b"))
    assert failed.returncode != 0
    assert "no text column 'text' (columns found: body, n); set --text_column" in failed.stderr
