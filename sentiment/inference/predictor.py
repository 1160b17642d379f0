"""``Predictor``: a trained model ready for raw text, read from its checkpoint once.

    from sentiment.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint("lightning_logs/version_0/checkpoints/best.ckpt")
    predictor.predict(["A wonderful film.", "Dull."])
    # [{'label': 'positive', 'score': 0.97..., 'scores': {'negative': 0.02..., 'positive': 0.97...}}, ...]

It holds the network, the text encoder (tokenizer settings and vocabulary) and the label names. Everything after
training goes through it: ``SentimentClassifier.predict`` and ``explain``, ``sentiment predict`` (the
classifier's ``predict_step``), ``sentiment serve`` and ``sentiment export``. Plain PyTorch: importing it loads no
Lightning, so a script or a server that only predicts starts in about the time of ``import torch``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain, islice
from typing import Any, Literal, get_args

import torch

from sentiment.data.bag import word_shares
from sentiment.inference.checkpoint import (load_labels, load_network, load_temperature, load_text_encoder,
                                            load_thresholds, read_checkpoint)
from sentiment.cpu import native_bfloat16, usable_bfloat16
from sentiment.network.gate_tables import TABLES_FROM, GateTables
from sentiment.data.labels import BINARY, numeric_values
from sentiment.network.model import SentimentNet, probabilities
from sentiment.data.text import TextEncoder, Vocab, tokenize_bytes

# How the network computes: the recurrence in bfloat16 (CPUs that have it natively); float32 through per-word gate
# tables where the network allows (``sentiment.network.gate_tables``: the same answers, about twice as fast as PyTorch's
# own LSTM kernel on CPUs without bfloat16); float32 through PyTorch's own LSTM kernel, as in training.
Compute = Literal["bfloat16", "float32", "float32-plain"]
COMPUTES = get_args(Compute)


def answer_columns(labels: Sequence[str], multi_label: bool = False) -> list[str]:
    """The columns an answer is written in (``answer_cells``): ``label`` and ``score``, or for label sets ``labels``;
    ``p_<label>`` for every class; ``expected`` where the labels are numbers."""
    columns = ["labels"] if multi_label else ["label", "score"]
    columns += [f"p_{label}" for label in labels]
    return columns + (["expected"] if numeric_values(labels) is not None else [])


def answer_cells(answer: dict[str, Any] | None, columns: Sequence[str], separator: str = ";") -> list[str]:
    """An answer as the text of ``answer_columns``' cells: label sets joined by ``separator``, probabilities to six
    decimals; no answer (an empty review): every cell empty."""
    if answer is None:
        return [""] * len(columns)
    decided = [separator.join(answer["labels"])] if "labels" in answer else [answer["label"], f"{answer['score']:.6f}"]
    cells = [*decided, *(f"{p:.6f}" for p in answer["scores"].values())]
    return cells + ([f"{answer['expected']:.4f}"] if "expected" in columns else [])


def default_compute() -> Compute:
    """``bfloat16`` on CPUs that compute in it natively, else ``float32`` (the gate tables where they apply)."""
    return "bfloat16" if native_bfloat16() else "float32"


class Predictor:
    """Raw reviews in, answers out, in input order: the predicted ``label``, its probability as ``score``, the
    probability of every class as ``scores`` and, where the labels are numbers (star ratings), ``expected``: the
    probability-weighted label, a rating to sort by. A model of label sets (``multi_label``) answers ``labels``, the
    labels whose probability reaches their threshold (most probable first; none is an answer too), and ``scores``,
    each label's own probability.

    Batches run on ``threads`` worker threads at once, one core each: on two cores that reads 1.2x as many
    reviews a second as one batch at a time on two cores (BENCHMARKS.md), since a recurrence's small steps
    keep two cores of one batch waiting on each other, while two batches do not wait at all.

    Args:
        net: the trained network (put in eval mode while predicting).
        encoder: the text encoder it was trained with.
        labels: the classes, in the order of the network's outputs (default: ``negative``, ``positive``).
        temperature: the logits are divided by it before the probabilities are taken (calibration).
        thresholds: for label sets, each label's probability from which a text has it (chosen on validation for F1;
            default 0.5).
        threshold: for label sets, one threshold for every label instead of ``thresholds``.
        top_k: for label sets, the ``top_k`` most probable labels of every text, whatever their probability (with
            ``threshold``, at most ``top_k`` of those that reach it; fastText's ``predict-prob k threshold``).
        compute: ``bfloat16`` (the recurrence in bfloat16, the output layer in float32), ``float32`` (through
            per-word gate tables, ``sentiment.network.gate_tables``, where the network allows; else PyTorch's LSTM) or
            ``float32-plain`` (PyTorch's own LSTM kernel). Default: ``bfloat16`` where the CPU computes in it
            natively, else ``float32``, as ``sentiment predict`` does. ``bfloat16`` asked for on a CPU without it:
            ``float32``, with a one-line warning.
        batch_size: reviews per forward pass.
        threads: batches read at once, each with one torch thread (default: one per available core; 1: one
            batch at a time, with torch's own threads).
    """

    def __init__(self, net: SentimentNet, encoder: TextEncoder, labels: Sequence[str] = BINARY,
                 temperature: float = 1.0, compute: Compute | None = None, batch_size: int = 256,
                 threads: int | None = None, thresholds: Sequence[float] | torch.Tensor | None = None,
                 threshold: float | None = None, top_k: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if compute is not None and compute not in COMPUTES:
            raise ValueError(f"compute must be one of {', '.join(COMPUTES)}, got {compute!r}")
        self.net, self.encoder, self.batch_size = net, encoder, batch_size
        if compute is None:
            compute = default_compute()
        elif compute == "bfloat16" and not usable_bfloat16(True, "compute='bfloat16'"):
            compute = "float32"
        self.compute = compute
        self._tables: GateTables | None = None  # built at the first batch that uses them
        self._building = threading.Lock()  # by one worker thread
        self.threads = threads or len(os.sched_getaffinity(0))
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.labels, self.temperature = tuple(labels), float(temperature)
        self.multi_label = net.multi_label
        if not self.multi_label and (threshold is not None or top_k is not None):
            raise ValueError("threshold and top_k choose among the labels of a multi-label model; this model answers "
                             "one label per text")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1], got {threshold}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if threshold is not None:
            thresholds = [threshold] * len(self.labels)
        elif thresholds is None or top_k is not None:  # top_k alone: the k most probable, whatever their probability
            thresholds = [0.5 if top_k is None else 0.0] * len(self.labels)
        self.thresholds = torch.as_tensor(thresholds, dtype=torch.float32)
        if self.multi_label and self.thresholds.shape != (len(self.labels),):
            raise ValueError(f"thresholds: one per label ({len(self.labels)}), got {tuple(self.thresholds.shape)}")
        self.top_k = top_k
        values = numeric_values(self.labels)
        self._values = values.tolist() if values is not None else None
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **options: Any) -> Predictor:
        """Read a checkpoint written by ``sentiment fit`` (as data only: nothing in it runs) and hold its model.

        ``options`` are ``Predictor``'s own (``compute``, ``batch_size``, ``threads``, ``threshold``, ``top_k``).
        """
        checkpoint = read_checkpoint(path)
        labels = load_labels(checkpoint)
        predictor = cls(load_network(checkpoint, path), load_text_encoder(checkpoint, path), labels,
                        load_temperature(checkpoint), thresholds=load_thresholds(checkpoint, len(labels)), **options)
        predictor.net.keep_inference_casts()  # this network's weights never change
        return predictor

    def __getstate__(self) -> dict[str, Any]:  # sent to another process (the server's model process): no threads
        return {**self.__dict__, "_pool": None, "_tables": None, "_building": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _building=threading.Lock())

    @property
    def bfloat16(self) -> bool:
        """Whether the recurrence computes in bfloat16."""
        return self.compute == "bfloat16"

    @property
    def kernel(self) -> str:
        """How the recurrence computes, in words (``sentiment serve``'s ``/info`` and the benchmark report it)."""
        if self.compute == "float32" and GateTables.supports(self.net):
            return f"float32, gate tables (batches of {TABLES_FROM} or more; fewer: PyTorch's LSTM)"
        return "bfloat16, PyTorch's LSTM" if self.bfloat16 else "float32, PyTorch's LSTM"

    # --- classifying -----------------------------------------------------------------------------------

    def predict(self, texts: str | Sequence[str]) -> list[dict[str, Any]]:
        """Classify reviews: ``[{"label": "positive", "score": 0.97, "scores": {...}}, ...]``, in input order.

        ``score`` is the probability of the predicted label (for a binary model, ``scores["positive"]`` is the
        probability that the review is positive).
        """
        return list(self.stream([texts] if isinstance(texts, str) else texts))

    def stream(self, texts: Iterable[str]) -> Iterator[dict[str, Any]]:
        """``predict`` for an iterable of any length (a file read line by line, say): answers come as the
        batches are read, and memory stays that of a few batches."""
        texts = iter(texts)
        batches = iter(lambda: list(islice(texts, self.batch_size)), [])
        head = list(islice(batches, 2))
        with self._evaluating():
            if len(head) < 2 or self.threads == 1:  # one batch (a single review, say): all cores on it
                for batch in chain(head, batches):
                    yield from self._answer(batch)
                return
            pending: deque[Future] = deque()
            for batch in chain(head, batches):
                pending.append(self._workers().submit(self._answer, batch))
                if len(pending) > self.threads:  # at most one batch waits beside those being read
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()

    def probabilities(self, input_ids: torch.Tensor, lengths: torch.Tensor, bag_ids: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """The probability of every class (B x classes, float32, calibrated; of label sets, each label's own), the
        network run in the caller's precision (``running`` sets ours); ``bag_ids`` for a network with a bag
        (``TextEncoder.model_inputs``)."""
        return probabilities(self.logits(input_ids, lengths, bag_ids).float() / self.temperature, self.multi_label)

    def logits(self, input_ids: torch.Tensor, lengths: torch.Tensor, bag_ids: torch.Tensor | None = None
               ) -> torch.Tensor:
        """The network's logits, computed as ``compute`` says: through the gate tables for batches of
        ``TABLES_FROM`` reviews or more, where they apply."""
        tables = self._gate_tables() if len(input_ids) >= TABLES_FROM and not self.net.training else None
        return (tables or self.net)(input_ids, lengths, bag_ids)

    def ready(self) -> Predictor:
        """Build now what the first large batch would build (the gate tables): a server's first answer then
        comes as fast as the next."""
        self._gate_tables()
        return self

    def _gate_tables(self) -> GateTables | None:
        """The network's gate tables, built once (the weights must not change afterwards), where ``compute`` and
        the network call for them."""
        if self.compute != "float32" or not GateTables.supports(self.net):
            return None
        with self._building:
            if self._tables is None:
                self._tables = GateTables(self.net)
        return self._tables

    def answers(self, probs: torch.Tensor) -> list[dict[str, Any]]:
        """Answers from class probabilities (B x classes)."""
        labels, values = self.labels, self._values
        if self.multi_label:
            return [{"labels": answered, "scores": dict(zip(labels, row))}
                    for answered, row in zip(self.label_sets(probs), probs.tolist())]
        best = probs.argmax(dim=1).tolist()
        out = []
        for k, row in zip(best, probs.tolist()):
            answer = {"label": labels[k], "score": row[k], "scores": dict(zip(labels, row))}
            if values is not None:
                answer["expected"] = sum(v * p for v, p in zip(values, row))
            out.append(answer)
        return out

    def label_sets(self, probs: torch.Tensor) -> list[list[str]]:
        """Each text's labels (of label probabilities, B x labels): those that reach their threshold, at most
        ``top_k``, most probable first."""
        order = probs.argsort(dim=1, descending=True)
        chosen = (probs >= self.thresholds).gather(1, order)
        if self.top_k is not None:
            chosen[:, self.top_k:] = False
        # the chosen labels of every row, end to end, then cut per row: Python touches only the labels answered
        picked, counts = order[chosen].tolist(), chosen.sum(1).tolist()
        labels, out, start = self.labels, [], 0
        for n in counts:
            out.append([labels[k] for k in picked[start:start + n]])
            start += n
        return out

    def explain(self, text: str, label: str | None = None) -> dict[str, Any]:
        """Classify one review and say how much each word it read weighed for ``label`` (default: the predicted
        label; of label sets, the most probable), named in the answer as ``explained``.

        Returns the answer (``label``, ``score``, ``scores``, ...) with ``method`` and ``words``:
        ``[{"word": ..., "weight": ...}]`` for the tokens the model reads, in order. With attention pooling the
        weights are the attention weights (they sum to 1). Otherwise they are occlusion scores: how much the
        probability of the explained label drops when that word is replaced by ``<unk>`` (negative for words
        that speak against it).

        A model with a bag of n-grams reads every word of the review: ``method`` is then ``ngrams``, ``words``
        holds every token, and each weight is the word's exact share of what the bag adds to the explained
        label's logit (each n-gram's part split among its words; negative against the label; they sum to
        ``bag_logit``). The recurrent part's own weights (attention or occlusion) stay beside them as
        ``read``, on the tokens it reads.
        """
        words, ids = self.encoder.encode_words(text)
        inputs = self.encoder.model_inputs([text])
        bag_ids = inputs.get("bag_ids")
        with self.running():
            if not ids:  # nothing to read: the model still answers, with nothing to highlight
                probs = self.probabilities(**inputs)
                return {**self.answers(probs)[0], "explained": self.labels[self._explained(label, probs[0])],
                        "method": "none", "words": []}
            input_ids, lengths = inputs["input_ids"], inputs["lengths"]
            logits, attention = self.net(input_ids, lengths, bag_ids, return_attention=True)
            probs = probabilities(logits.float() / self.temperature, self.multi_label)
            answer = self.answers(probs)[0]
            k = self._explained(label, probs[0])
            answer["explained"] = self.labels[k]
            if attention is not None:
                method, weights = "attention", attention[0, : len(ids)].float()
            else:  # one copy of the review per word, with that word hidden
                occluded = input_ids.repeat(len(ids), 1)
                occluded.fill_diagonal_(Vocab.unk_id)
                without = self.probabilities(occluded, lengths.repeat(len(ids)),
                                             None if bag_ids is None else bag_ids.repeat(len(ids), 1))[:, k]
                method, weights = "occlusion", probs[0, k] - without
        read = [{"word": w, "weight": round(x, 5)} for w, x in zip(words, weights.tolist())]
        if self.net.linear_bag is None:
            return {**answer, "method": method, "words": read}
        bag = self.net.linear_bag
        binary = bag.weight.weight.shape[1] == 1
        # one logit for two classes, > 0 speaking for the second: its terms count against the first
        column, sign = (0, 1.0 if k else -1.0) if binary else (k, 1.0)
        added = sign * bag.weighted_table()[:, column].double().numpy()
        tokens = tokenize_bytes(text)
        shares = word_shares(tokens, self.encoder.ngrams, added)
        return {**answer, "method": "ngrams", "bag_logit": round(float(shares.sum()), 5),
                "words": [{"word": t.decode(), "weight": round(x, 5)} for t, x in zip(tokens, shares.tolist())],
                "read": {"method": method, "words": read}}

    def _explained(self, label: str | None, probs: torch.Tensor) -> int:
        """The index of the label an explanation is of: ``label``, or the most probable."""
        if label is None:
            return int(probs.argmax())
        if label not in self.labels:
            raise ValueError(f"label {label!r} is not one of the model's labels {', '.join(self.labels)}")
        return self.labels.index(label)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Eval mode, no autograd, and this predictor's precision; the network's mode is restored after."""
        with self._evaluating(), self._computing():
            yield

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        was_training = self.net.training
        self.net.eval()
        try:
            yield
        finally:
            self.net.train(was_training)

    def _computing(self) -> contextlib.AbstractContextManager:
        """No autograd, and this predictor's precision: both are per thread, so each worker enters them itself."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bfloat16))
        return stack

    def _answer(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One batch, tokenized, read and answered on the calling thread (a worker's, or the caller's)."""
        with self._computing():
            return self.answers(self.probabilities(**self.encoder.model_inputs(texts)))

    def _workers(self) -> ThreadPoolExecutor:
        """``threads`` worker threads of one torch thread each, started together; every other thread keeps the
        count it had."""
        if self._pool is None:
            saved = torch.get_num_threads()
            started = threading.Barrier(self.threads)
            pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sentiment-predict", initializer=_one_thread)
            list(pool.map(lambda _: started.wait(), range(self.threads)))  # every worker exists now
            torch.set_num_threads(saved)  # torch's default for new threads, which the workers' setting changed
            self._pool = pool
        return self._pool


def _one_thread() -> None:
    torch.get_num_threads()  # torch sets a new thread's count from its default on first use: let it, then ours
    torch.set_num_threads(1)
