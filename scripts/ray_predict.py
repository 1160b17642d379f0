"""Batch prediction over a corpus larger than one machine's throughput, with Ray Data.

The input is read in blocks (a file or a folder of files, CSV or JSON lines), each block's texts answered by a
``Predictor`` held in a Ray actor (read from the checkpoint once per actor), and the answers written as CSV files as
the blocks come: the corpus is never whole in one process's memory. Each output row is its input row (every column,
the text included) followed by the columns ``sentiment predict`` writes (``label``, ``score``, ``p_<label>``, ...;
``labels`` for label sets). Ray writes one file per block, named by Ray; read them back in any order by their ``id``
column, or together with ``ray.data.read_csv``.

    pip install "ray[data]"     # not a dependency of sentiment itself
    python scripts/ray_predict.py --checkpoint best.ckpt --input reviews.csv --output answers/
    # a cluster: start it with `ray start` on each machine, then on one of them
    RAY_ADDRESS=auto python scripts/ray_predict.py --checkpoint best.ckpt --input /shared/reviews/ \\
        --output /shared/answers/ --actors 16

``--actors`` actors of ``--cpus`` cores each answer at once (by default one per core, leaving Ray Data's reading and
writing a logical core of their own); each computes with its cores' threads. The checkpoint and the input must be
readable at the same path on every machine.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from sentiment.inference.predictor import Predictor, answer_cells, answer_columns


class Answer:
    """One ``Predictor`` in a Ray actor: it answers each batch of rows Ray Data gives it (a pandas DataFrame) with
    the rows and their answers' columns."""

    def __init__(self, checkpoint: str, text_column: str, separator: str, cpus: int) -> None:
        import torch

        torch.set_num_threads(cpus)
        self.predictor = Predictor.from_checkpoint(checkpoint, threads=1)  # this actor's cores on one batch at a time
        self.text_column, self.separator = text_column, separator
        self.columns = answer_columns(self.predictor.labels, self.predictor.multi_label)

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        if self.text_column not in rows.columns:
            found = ", ".join(map(str, rows.columns))
            raise ValueError(f"no text column {self.text_column!r} (columns found: {found}); set --text_column")
        texts = rows[self.text_column].fillna("").astype(str).tolist()
        answers = iter(self.predictor.predict([t for t in texts if t.strip()]))
        # an empty text: nothing to classify, and its row says so with empty cells, as `sentiment predict` writes it
        cells = [answer_cells(next(answers) if text.strip() else None, self.columns, self.separator) for text in texts]
        answered = pd.DataFrame(cells, columns=self.columns, index=rows.index)
        return pd.concat([rows, answered], axis=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `sentiment fit`")
    parser.add_argument("--input", required=True, help="a CSV or JSONL file, or a folder of them")
    parser.add_argument("--output", required=True, help="the folder the CSV files of answers are written into")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--label_separator", default=";", help="joins a text's labels, for a model of label sets")
    parser.add_argument("--actors", type=int, default=None, help="actors answering at once (default: one per core)")
    parser.add_argument("--cpus", type=int, default=1, help="cores each actor computes with")
    parser.add_argument("--batch_size", type=int, default=4096, help="rows given to an actor at a time")
    args = parser.parse_args(argv)

    import ray

    checkpoint = str(Path(args.checkpoint).resolve())
    if not Path(checkpoint).is_file():
        parser.error(f"{checkpoint}: no such checkpoint")
    address = os.environ.get("RAY_ADDRESS")
    # Ray Data's reading and writing tasks ask for a core each, and actors holding every core would leave them none
    # (the run waits for ever): on this machine, one logical core more than it has, for them (they mostly wait on
    # files); on a cluster, one core fewer for the actors
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ray.init(address=address, num_cpus=None if address else cores + 1, include_dashboard=False, log_to_driver=False)
    actors = args.actors or max(1, (int(ray.cluster_resources().get("CPU", 1)) - 1) // args.cpus)
    path = str(Path(args.input).resolve())
    jsonl = path.endswith((".jsonl", ".ndjson")) or (Path(path).is_dir() and any(Path(path).glob("*.jsonl")))
    # every column as text, as `sentiment predict` reads them (an id of digits keeps its leading zeros)
    rows = (ray.data.read_json(path, lines=True, file_extensions=["jsonl", "ndjson"]) if jsonl else
            ray.data.read_csv(path, convert_options=_all_strings(path)))
    settings = {"checkpoint": checkpoint, "text_column": args.text_column, "separator": args.label_separator,
                "cpus": args.cpus}
    answered = rows.map_batches(Answer, fn_constructor_kwargs=settings, batch_format="pandas",
                                batch_size=args.batch_size, concurrency=actors, num_cpus=args.cpus)
    answered.write_csv(str(Path(args.output).resolve()))
    print(f"Wrote the answers to {args.output} ({actors} actors of {args.cpus} core(s))")


def _all_strings(path: str):
    """pyarrow's CSV options that read every column of the first file as text."""
    import pyarrow
    import pyarrow.csv

    first = Path(path) if Path(path).is_file() else min(Path(path).glob("*.csv"))
    columns = pd.read_csv(first, nrows=0).columns
    return pyarrow.csv.ConvertOptions(column_types={c: pyarrow.string() for c in columns}, strings_can_be_null=False)


if __name__ == "__main__":
    main()
