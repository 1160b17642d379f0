"""README.md says what the tree holds and how to use it: its layout and its ONNX example are checked here."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import run_cli

from sentiment.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block(after: str, language: str) -> str:
    """The first fenced ``language`` block after the line ``after``."""
    rest = README[README.index(after):]
    return re.search(rf"```{language}\n(.*?)```", rest, re.S).group(1)


def test_the_layout_names_every_file_of_the_package_and_the_benchmark_and_nothing_else():
    layout = _block("## Layout", "")
    package = layout[layout.index("sentiment/") : layout.index("\nconfigs/")]
    named = set(re.findall(r"\b\w+\.(?:py|html)\b", package))
    assert named == {p.name for p in (ROOT / "sentiment").iterdir() if p.suffix in (".py", ".html")}
    scripts = layout[layout.index("\nscripts/") : layout.index("\ntests/")]
    sections = re.search(r"one module per section \(([^)]*)\)", scripts).group(1).split(", ")
    assert {f"{s}.py" for s in sections} | {"common.py", "__init__.py"} == {
        p.name for p in (ROOT / "scripts" / "bench").glob("*.py")}
    for folder in ("sentiment/", "configs/", "scripts/", "tests/"):
        assert re.search(rf"^{folder}", layout, re.M) and (ROOT / folder).is_dir()


def test_the_onnx_example_runs_as_written(trained, tmp_path):
    assert run_cli("export", "--ckpt_path", str(trained["best"]), "--output", str(tmp_path / "model.onnx")) == 0
    example = _block("### Any ONNX runtime", "python")
    printed = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                             check=True).stdout
    texts = ast.literal_eval(re.search(r"model_inputs\((\[.*?\])\)", example).group(1))
    # the tiny test model is not the README's IMDb model: the labels printed are the ones it gives
    assert printed == f"{[a['label'] for a in Predictor.from_checkpoint(trained['best']).predict(texts)]}\n"
