import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REAL_ARCHIVE, build_imdb_archive

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


@pytest.mark.slow
def test_benchmark_quick_pass_runs_every_section(tmp_path):
    archive = REAL_ARCHIVE if REAL_ARCHIVE.exists() else build_imdb_archive(tmp_path / "a.tar.gz", 400, 0)
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--archive", str(archive),
                          "--output", str(tmp_path / "B.md")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for row in ("tokenize + vocabulary + encode", "training throughput, default recipe",
                "`Trainer` + SentimentClassifier", "fastText (C++, bigrams)", "`Predictor.predict`",
                "`sentiment predict`", "start-up: `import sentiment.predictor`", "`sentiment serve --api_key`",
                "DDP, 2 processes"):
        assert row in out.stdout, row
    assert not (tmp_path / "B.md").exists()  # --quick writes nothing


def test_benchmark_refuses_a_missing_archive(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--archive", str(tmp_path / "none.tar.gz")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no such archive" in out.stderr
