import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_imdb_archive

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


@pytest.mark.slow
def test_benchmark_quick_pass_runs_every_section(tmp_path):
    # a small archive: every section runs (the real one would only add reading and tokenizing time here)
    archive = build_imdb_archive(tmp_path / "a.tar.gz", 400, 0)
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--archive", str(archive),
                          "--output", str(tmp_path / "B.md")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for row in ("tokenize + vocabulary + encode", "training throughput, default recipe",
                "`Trainer` + SentimentClassifier", "fastText (C++, bigrams)", "`Predictor.predict`",
                "`sentiment predict`", "start-up: `import sentiment.inference.predictor`",
                "`sentiment serve --api_key`",
                "DDP, 2 processes", "cold `sentiment fit --config configs/imdb.yaml`", "one epoch of the original"):
        assert row in out.stdout, row
    assert not (tmp_path / "B.md").exists()  # --quick writes nothing


def test_benchmark_refuses_a_missing_archive(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--archive", str(tmp_path / "none.tar.gz")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no such archive" in out.stderr


@pytest.mark.slow
def test_the_accuracy_references_run_on_the_projects_own_split(trained, tmp_path):
    scripts = SCRIPT.parent
    data = ["--data.train_file", str(trained["root"] / "train.csv"), "--data.test_file", str(trained["test"]),
            "--data.data_dir", str(tmp_path / "d"), "--data.encoding.min_freq", "1"]
    out = subprocess.run([sys.executable, str(scripts / "reference.py"), *data, "--C", "4"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("labels negative, positive; train 360 reviews")  # the seeded split: 400 less 40
    assert [line.split(":")[0] for line in lines[1:]] == ["C 4 val", "C 4 test"]
    assert float(lines[1].split("acc ")[1].split(",")[0]) > 90  # the tiny corpus is easy
    out = subprocess.run([sys.executable, str(scripts / "calibration.py"), "--ckpt_path", str(trained["best"]), *data],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("validation: 40 reviews, accuracy ")
    assert "snippets (first 20 tokens): 40 reviews" in out.stdout
