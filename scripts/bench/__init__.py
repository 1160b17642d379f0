"""The benchmark's sections, one module each, run by ``scripts/benchmark.py``.

Every figure is measured side by side with its reference in one run (``common.in_turns``), and the models and
data are built by the project's own code from ``configs/`` (``common.recipe``).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project's checkout (no heavy imports here: see benchmark.py)
