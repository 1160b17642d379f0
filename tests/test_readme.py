"""README.md says what the tree holds and how to use it: its layout and its ONNX example are checked here."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_archive_with_unlabelled, run_cli

from sentiment import SentimentClassifier, SentimentDataModule, self_train
from sentiment.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block(after: str, language: str) -> str:
    """The first fenced ``language`` block after the line ``after``."""
    rest = README[README.index(after):]
    return re.search(rf"```{language}\n(.*?)```", rest, re.S).group(1)


def test_the_layout_names_every_file_of_the_package_and_the_benchmark_and_nothing_else():
    layout = _block("## Layout", "")
    package = layout[layout.index("sentiment/") : layout.index("\nconfigs/")]
    named, room = set(), ""
    for line in package.splitlines()[1:]:
        if re.match(r"^  \w+/", line):  # a room: its files follow, indented once more
            room = line.split()[0]
        elif line.startswith("  ") and line.strip():  # a file: its name (or names) first, then what it holds
            names = re.findall(r"\b\w+\.(?:py|html)\b", re.split(r"\s{2,}", line.strip())[0])
            named |= {(room if line.startswith("    ") else "") + name for name in names}
    named |= set(re.findall(r"\b__\w+__\.py\b", package.splitlines()[0]))
    files = {p.relative_to(ROOT / "sentiment").as_posix() for p in (ROOT / "sentiment").rglob("*")
             if p.suffix in (".py", ".html") and "__pycache__" not in p.parts}
    rooms = {f.split("/")[0] + "/" for f in files if "/" in f}
    assert named == {f for f in files if not (f.endswith("/__init__.py"))}  # a room's __init__.py: its index
    assert all(f"{room}__init__.py" in files for room in rooms)
    scripts = layout[layout.index("\nscripts/") : layout.index("\ntests/")]
    sections = re.search(r"one module per section \(([^)]*)\)", scripts).group(1).split(", ")
    assert {f"{s}.py" for s in sections} | {"common.py", "__init__.py"} == {
        p.name for p in (ROOT / "scripts" / "bench").glob("*.py")}
    for folder in ("sentiment/", "configs/", "scripts/", "tests/"):
        assert re.search(rf"^{folder}", layout, re.M) and (ROOT / folder).is_dir()


# The rooms in the order they may import each other: each only from those before it (and the shared helpers)
ROOMS = ("data", "network", "inference", "training", "cli")
SHARED = ("errors", "io", "cpu")


def test_each_room_imports_only_from_the_rooms_before_it():
    for path in (ROOT / "sentiment").rglob("*.py"):
        parts = path.relative_to(ROOT / "sentiment").with_suffix("").parts
        room = parts[0] if len(parts) > 1 else parts[0].removesuffix("_")
        if room not in ROOMS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if isinstance(node, ast.ImportFrom) and node.module == "sentiment":
                names = [f"sentiment.{a.name}" for a in node.names]
            for name in names:
                if not name.startswith("sentiment.") or name.split(".")[1] in SHARED:
                    continue
                used = name.split(".")[1]
                assert ROOMS.index(used) <= ROOMS.index(room), f"{path.name} ({room}) imports {name}"


def test_the_onnx_example_runs_as_written(trained, tmp_path):
    assert run_cli("export", "--ckpt_path", str(trained["best"]), "--output", str(tmp_path / "model.onnx")) == 0
    example = _block("### Any ONNX runtime", "python")
    printed = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                             check=True).stdout
    texts = ast.literal_eval(re.search(r"model_inputs\((\[.*?\])\)", example).group(1))
    # the tiny test model is not the README's IMDb model: the labels printed are the ones it gives
    assert printed == f"{[a['label'] for a in Predictor.from_checkpoint(trained['best']).predict(texts)]}\n"


@pytest.mark.slow
def test_the_self_training_script_trains_the_student_sentiment_fit_trains(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    build_archive_with_unlabelled(data_dir, 80)
    # README's script and `sentiment fit --self_training true`, both on a tiny archive with a small network
    tiny_data = {"encoding": {"min_freq": 1}, "loader": {"min_epoch_size": 1000, "batch_size": 32},
                 "unlabelled": {"word_vectors": 16, "per_batch": 0}}  # imdb_semi.yaml's: the class's default
    tiny_model = {"net": {"hidden_dim": 16, "embed_dim": 16}, "lr": 0.01}
    options = [f"--data.{group}.{k}={v}" for group, tiny in tiny_data.items() for k, v in tiny.items()]
    options += ["--model.net.hidden_dim=16", "--model.net.embed_dim=16", "--model.lr=0.01"]
    assert run_cli("fit", "--self_training", "true", *options, "--data.data_dir", str(data_dir),
                   "--seed_everything", "42", "--trainer.precision", "32-true",
                   "--trainer.default_root_dir", str(tmp_path / "cli"),
                   "--trainer.enable_progress_bar", "false") == 0
    fitted = torch.load(tmp_path / "cli" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt",
                        weights_only=False)["state_dict"]

    script = _block("Self-training (`sentiment fit --self_training true`", "python")
    imports = "from sentiment import SentimentClassifier, SentimentDataModule, self_train\n"
    assert imports in script
    names = {"SentimentDataModule": lambda **kw: SentimentDataModule(**{
                 **kw, **{group: {**kw.get(group, {}), **tiny} for group, tiny in tiny_data.items()}}),
             "SentimentClassifier": lambda **kw: SentimentClassifier(**{**kw, **tiny_model}),
             "self_train": self_train}
    monkeypatch.chdir(tmp_path)  # the script's data_dir="data"
    exec(script.replace(imports, ""), names)
    dm, model = names["dm"], names["model"]
    # it learnt from the unlabelled reviews too: 180 labelled training reviews, and some of the 81 unlabelled
    assert dm.unlabelled.pseudo_labels and 180 < len(dm.dataset("train")) < 180 + 81
    state = model.state_dict()
    assert state.keys() == fitted.keys()
    for name, weights in state.items():
        assert torch.equal(weights, fitted[name]), name
