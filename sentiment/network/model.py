"""The network: plain PyTorch, no Lightning, reusable in any training loop.

    token ids -> Embedding -> recurrent encoder (LSTM or GRU) -> pooling over time -> dropout -> Linear -> logit

Padding never reaches the result, so a review gives the same logit whether it is batched alone or beside
longer ones: padding sits after each review, where a forward recurrence reaches it only after the last
real token; the backward direction reads each review reversed within its own length; every pooling
masks padded steps. This is 2-3x faster on CPU than packed sequences, which give the same results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

Cell = Literal["lstm", "gru"]
Pooling = Literal["last", "mean", "max", "mean_max", "attention"]
CELLS, POOLINGS = get_args(Cell), get_args(Pooling)


class AdditivePooling(nn.Module):
    """Learned additive (Bahdanau-style) attention over time; padded steps get zero weight."""

    def __init__(self, dim: int, attn_dim: int = 64) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, attn_dim)
        self.score = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``states``: T x B x D (time-major), ``mask``: T x B. Returns the pooled B x D and the weights T x B."""
        scores = self.score(torch.tanh(self.proj(states))).squeeze(-1)  # T x B
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=0)
        # a weighted sum over time, elementwise: torch.bmm would copy the time-major states to batch-major
        return (weights.unsqueeze(-1).to(states.dtype) * states).sum(0), weights


class FastDropout(nn.Dropout):
    """``nn.Dropout`` for large activations on CPU, 3-4x faster: each element's keep-or-drop comes from 16
    random bits (``p`` is honoured to 1/65536), drawn 64 bits at a time, where ``nn.Dropout`` draws a
    Bernoulli number per element, which costs an eighth of a training step on the embeddings here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return torch.zeros_like(x)
        bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, 2**63 - 1)
        keep = bits.view(torch.int16)[: x.numel()].view(x.shape) >= round(self.p * 65536) - 32768
        return x * keep * (1 / (1 - self.p))


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor, time_dim: int = 1) -> torch.Tensor:
    """Reverse each sequence of ``x`` within its real length; padding stays put.

    ``x``: B x T or B x T x D (``time_dim`` 1), or T x B x D (``time_dim`` 0).
    """
    steps = torch.arange(x.size(time_dim), device=x.device)[None, :]
    idx = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)  # B x T
    if time_dim == 0:
        idx = idx.t()
    if x.dim() == 2:
        return x.gather(time_dim, idx)
    # whole D-wide rows picked from the flattened steps: 20x faster than gather's element-wise indices
    batch = torch.arange(x.size(1 - time_dim), device=x.device)
    rows = idx * x.size(1) + batch[None, :] if time_dim == 0 else batch[:, None] * x.size(1) + idx
    return x.reshape(-1, x.size(2)).index_select(0, rows.reshape(-1)).view_as(x)


class RecurrentEncoder(nn.Module):
    """Stacked LSTM/GRU layers over right-padded, time-major sequences; bidirectional layers read each review
    both ways.

    Time-major (T x B x D) because that is the recurrence's own layout: batch-first tensors would be
    transposed on the way in and out of every layer, a sixth of the inference time.

    Returns every step's state (T x B x H*directions; padded steps hold values that must be masked) and
    the summary state of each review: forward state at its last real token, backward state at its first.
    """

    def __init__(self, input_dim: int, hidden_dim: int, cell: Cell, num_layers: int, bidirectional: bool,
                 dropout: float) -> None:
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            nn.ModuleList(rnn(input_dim if i == 0 else hidden_dim * directions, hidden_dim)
                          for _ in range(directions))
            for i in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.output_dim = hidden_dim * directions

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                x_reversed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: T x B x D. ``x_reversed``: the input already reversed within lengths, if the caller has it
        cheaper."""
        for i, layer in enumerate(self.layers):
            if i:
                x = self.dropout(x)
            outs = [layer[0](x)[0]]
            if len(layer) == 2:
                backward_input = x_reversed if i == 0 and x_reversed is not None else reverse_within_lengths(
                    x, lengths, time_dim=0)
                outs.append(reverse_within_lengths(layer[1](backward_input)[0], lengths, time_dim=0))
            x = torch.cat(outs, dim=2) if len(outs) == 2 else outs[0]
        return x, summary_states(x, lengths, len(self.layers[-1]))


def summary_states(states: torch.Tensor, lengths: torch.Tensor, directions: int) -> torch.Tensor:
    """Each review's summary of time-major ``states`` (T x B x H*directions): the forward state at its last real token
    and the backward state at its first."""
    batch = torch.arange(states.size(1), device=states.device)
    hidden = states.size(2) // directions
    summary = states[lengths - 1, batch, :hidden]
    return torch.cat([summary, states[0, :, hidden:]], dim=1) if directions == 2 else summary


class LinearBag(nn.Module):
    """A linear model over a bag of n-grams (``sentiment.data.bag``), one logit per output: each n-gram present adds
    ``scale * weight`` to them (NBSVM's parametrisation: ``scale`` the n-gram's naive-Bayes log-count ratio, so the
    weights' decay is weakest for the n-grams that tell the classes apart most).

    ``ids``: B x M n-gram ids, right-padded with 0 (row 0 holds zeros). While training, ``dropout`` drops each
    n-gram of a review with that probability.
    """

    def __init__(self, size: int, outputs: int, init: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Embedding(size + 1, outputs, padding_idx=0)
        with torch.no_grad():
            self.weight.weight.fill_(init)
            self.weight.weight[0] = 0
        self.register_buffer("scale", torch.ones(size + 1, outputs))  # the log-count ratios, set from the data
        self.dropout = dropout

    def forward(self, ids: torch.Tensor, weighted: torch.Tensor | None = None) -> torch.Tensor:
        """The bag's logits (B x outputs); ``weighted``: ``weighted_table()``, when the caller keeps one."""
        if weighted is not None and not (self.training or torch.is_grad_enabled()):
            present = ids > 0  # only the n-grams present, summed per review: no padding read
            offsets = torch.zeros(len(ids), dtype=torch.long, device=ids.device)
            torch.cumsum(present.sum(1)[:-1], 0, out=offsets[1:])
            return F.embedding_bag(ids[present], weighted, offsets, mode="sum")
        terms = self.weight(ids) * F.embedding(ids, self.scale)  # B x M x outputs
        if self.training and self.dropout > 0:
            terms = terms * (torch.rand(ids.shape, device=ids.device) >= self.dropout).unsqueeze(-1)
        return terms.sum(1)

    def weighted_table(self) -> torch.Tensor:
        """What each n-gram adds to the logits when present (``scale * weight``; row 0, padding, is zero)."""
        return (self.weight.weight * self.scale).detach()


@dataclass(frozen=True)
class NetConfig:
    """The network's settings, one object (as nanoGPT's ``GPTConfig``): ``SentimentNet`` is built from it, a
    classifier's checkpoint keeps it whole, and LightningCLI reads it as ``--model.net.<setting>``.

    The defaults are the recipe we recommend (``configs/imdb.yaml``); ``configs/seed.yaml`` spells out the original
    project's network (hidden 64, one direction, last step, dropout 0.5).

    Args:
        embed_dim: embedding width.
        hidden_dim: recurrent state width (per direction).
        cell: ``lstm`` or ``gru``.
        num_layers: stacked recurrent layers.
        bidirectional: read the review in both directions.
        pooling: how the sequence of states becomes one vector: ``last`` (state at the last real token), ``mean``,
            ``max``, ``mean_max`` (both, concatenated) or ``attention`` (learned weights).
        dropout: dropout before the output layer (and between stacked layers).
        embed_dropout: dropout on the embeddings.
        word_dropout: while training, the share of tokens replaced by ``<unk>`` (a regularizer for text).
        bag_init: the bag of n-grams' weights start at this (1: the naive-Bayes classifier of the log-count ratios;
            0: no say until trained).
        bag_dropout: while training, the share of each review's n-grams the bag drops.
    """

    embed_dim: int = 128
    hidden_dim: int = 64  # beside the bag of n-grams, 128 scored the same in 1.4x the time (BENCHMARKS.md)
    cell: Cell = "lstm"
    num_layers: int = 1
    bidirectional: bool = True  # reads better than one direction, at 1.5x the time (BENCHMARKS.md)
    pooling: Pooling = "attention"  # last-step pooling forgets the start of a review
    dropout: float = 0.3
    embed_dropout: float = 0.25
    word_dropout: float = 0.1  # 0.2 scored lower at 128 tokens (BENCHMARKS.md)
    bag_init: float = 0.0
    bag_dropout: float = 0.5  # leaves the recurrent part something to learn: +0.4 (BENCHMARKS.md)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")

    @classmethod
    def of(cls, config: NetConfig | Mapping[str, Any] | None = None, **changes: Any) -> NetConfig:
        """A config from another, from a mapping of the settings that differ from the defaults (hyperparameters read
        back from a checkpoint or a YAML file), or the defaults; with ``changes`` applied."""
        if config is None or isinstance(config, Mapping):
            return cls(**{**(config or {}), **changes})
        return replace(config, **changes) if changes else config


class SentimentNet(nn.Module):
    """Embedding -> LSTM/GRU -> pooling -> dropout -> Linear: one logit per review for two classes (> 0: the
    second), or one per class for more; beside it, with ``bag_size``, a linear bag of n-grams over the whole review.

    Args:
        vocab_size: number of token ids.
        config: the network's settings (``NetConfig``; default: the recipe we recommend).
        num_classes: classes to tell apart (2: one logit, read with a sigmoid; more: a logit per class).
        multi_label: the classes are labels a text may have any number of: a logit per label, each read with its
            own sigmoid.
        bag_size: n-grams in the table of the linear bag over the whole review (``LinearBag``; the data module's
            ``bag_size``), whose logits add to the recurrent part's; 0: none.
        pad_id: id of the padding token (its embedding stays zero).
        unk_id: id of the unknown-word token.
        **changes: settings of ``config`` to change (``SentimentNet(vocab_size, hidden_dim=128)``).
    """

    def __init__(self, vocab_size: int, config: NetConfig | Mapping[str, Any] | None = None, num_classes: int = 2,
                 bag_size: int = 0, pad_id: int = 0, unk_id: int = 1, multi_label: bool = False,
                 **changes: Any) -> None:
        super().__init__()
        self.config = c = NetConfig.of(config, **changes)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.multi_label = multi_label
        self.pooling, self.bidirectional = c.pooling, c.bidirectional
        self.word_dropout, self.unk_id = c.word_dropout, unk_id
        self.embedding = nn.Embedding(vocab_size, c.embed_dim, padding_idx=pad_id)
        self.embed_dropout = FastDropout(c.embed_dropout)
        self.encoder = RecurrentEncoder(c.embed_dim, c.hidden_dim, c.cell, c.num_layers, c.bidirectional,
                                        c.dropout if c.num_layers > 1 else 0.0)
        state_dim = self.encoder.output_dim
        self.attention = AdditivePooling(state_dim) if c.pooling == "attention" else None
        self.dropout = nn.Dropout(c.dropout)
        outputs = 1 if num_classes == 2 and not multi_label else num_classes  # two classes: one logit, > 0 the second
        self.head = nn.Linear(state_dim * (2 if c.pooling == "mean_max" else 1), outputs)
        self.linear_bag = (LinearBag(bag_size, self.head.out_features, c.bag_init, c.bag_dropout) if bag_size
                           else None)
        self.keep_inference_casts(False)

    def keep_inference_casts(self, keep: bool = True) -> None:
        """While kept, lookups under autocast without gradients read a copy of the embedding table in the
        autocast type. The recurrence casts the embeddings to that type anyway: the same numbers, with half the
        bytes moved. The bag without gradients reads one table of what each n-gram adds, not two. The weights must
        not change meanwhile; ``train()`` drops the copies. `sentiment predict` keeps them for its run."""
        self._casts: dict[torch.dtype | str, torch.Tensor] | None = {} if keep else None

    def train(self, mode: bool = True) -> SentimentNet:
        if mode:
            self.keep_inference_casts(False)  # the weights are about to change
        return super().train(mode)

    def _kept(self, key: torch.dtype | str, make: Callable[[], torch.Tensor]) -> torch.Tensor | None:
        """The kept copy named ``key``, made at its first use; None unless copies are kept and no gradients are
        being taken (``keep_inference_casts``)."""
        if self._casts is None or torch.is_grad_enabled():
            return None
        if key not in self._casts:
            self._casts[key] = make()
        return self._casts[key]

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        device = self.embedding.weight.device.type
        if not torch.is_autocast_enabled(device):
            return self.embedding(ids)
        dtype = torch.get_autocast_dtype(device)
        table = self._kept(dtype, lambda: self.embedding.weight.detach().to(dtype))
        return self.embedding(ids) if table is None else F.embedding(ids, table, self.embedding.padding_idx)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, bag_ids: torch.Tensor | None = None,
                return_attention: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B for two classes, B x classes for more) for ``input_ids`` (B x T, right-padded) of real
        ``lengths`` (B), and with a bag, the n-gram ids of each whole review ``bag_ids`` (B x M, right-padded).

        With ``return_attention``, also the attention weights (B x T; None unless pooling is attention).
        An empty review (length 0) is read as a single padding token.
        """
        input_ids, lengths = self.prepare(input_ids, lengths)
        x, x_reversed = self.embed(input_ids, lengths)
        return self.read(x, input_ids, lengths, x_reversed, return_attention, self.bag_logits(bag_ids))

    def bag_logits(self, bag_ids: torch.Tensor | None) -> torch.Tensor | None:
        """The bag's part of the logits (B x outputs, float32), or None for a network without a bag."""
        if self.linear_bag is None:
            return None
        if bag_ids is None:
            raise ValueError("this network has a bag of n-grams: pass bag_ids (TextEncoder.model_inputs gives them)")
        weighted = self._kept("bag", self.linear_bag.weighted_table)
        with torch.autocast(bag_ids.device.type, enabled=False):
            return self.linear_bag(bag_ids, weighted)

    def prepare(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lengths clamped to [1, T]; while training, word dropout applied."""
        lengths = lengths.clamp(min=1, max=input_ids.size(1)).to(input_ids.device)
        if self.training and self.word_dropout > 0:
            dropped = torch.rand(input_ids.shape, device=input_ids.device) < self.word_dropout
            input_ids = input_ids.masked_fill(dropped & (input_ids != self.embedding.padding_idx), self.unk_id)
        return input_ids, lengths

    def embed(self, input_ids: torch.Tensor, lengths: torch.Tensor,
              reversed_too: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The embeddings, time-major (T x B x E, the recurrence's own layout), after embedding dropout; and,
        when ``reversed_too`` and it is cheaper, the same reversed within lengths for the backward direction."""
        x_reversed = None
        if reversed_too and self.bidirectional and not (self.training and self.embed_dropout.p > 0):
            # no dropout noise to share between the directions: reversing the ids, then looking them up, gives
            # the same numbers as reversing the embeddings, and moves a hundredth of the bytes
            x_reversed = self._embed(reverse_within_lengths(input_ids, lengths).t())
        return self.embed_dropout(self._embed(input_ids.t())), x_reversed

    def read(self, x: torch.Tensor, input_ids: torch.Tensor, lengths: torch.Tensor,
             x_reversed: torch.Tensor | None = None, return_attention: bool = False,
             bag: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Logits from embeddings ``x`` (T x B x E): recurrence, pooling, dropout, output layer; plus ``bag``, the
        bag's logits (``bag_logits``)."""
        states, summary = self.encoder(x, lengths, x_reversed)
        mask = torch.arange(input_ids.size(1), device=states.device)[:, None] < lengths[None, :]  # T x B
        pooled, weights = self.pool(states, summary, mask)
        weights = weights.t() if weights is not None else None
        with torch.autocast(pooled.device.type, enabled=False):  # under bfloat16 autocast too: full digits
            logits = self.head(self.dropout(pooled).float())
        if bag is not None:
            logits = logits + bag
        logits = logits.squeeze(-1) if logits.size(-1) == 1 else logits
        return (logits, weights) if return_attention else logits


    def pool(self, states: torch.Tensor, summary: torch.Tensor, mask: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The reviews' vectors (B x D) from time-major ``states`` (T x B x D; padded steps masked out by ``mask``,
        T x B) and their ``summary`` (``summary_states``), as ``pooling`` says; with attention, also its weights (T x
        B). The one definition of every pooling (the gate tables fold attention's into their own arithmetic)."""
        if self.pooling == "last":
            return summary, None
        if self.pooling == "attention":
            return self.attention(states, mask)
        return _masked_pool(states, mask, self.pooling), None


def _masked_pool(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Mean and/or max over the real steps of time-major ``states`` (T x B x D; ``mask``: T x B)."""
    m = mask.unsqueeze(-1)
    parts = []
    if pooling in ("mean", "mean_max"):
        parts.append((states * m).sum(0) / m.sum(0).clamp(min=1))
    if pooling in ("max", "mean_max"):
        parts.append(states.masked_fill(~m, float("-inf")).max(0).values)
    return torch.cat(parts, dim=1)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                        class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of class indices ``labels`` under ``logits``: binary on one logit per review (numerically
    stable), softmax over a logit per class otherwise. ``label_smoothing`` pulls the targets towards the uniform
    distribution (0.5 for two classes); ``class_weights`` (one per class) weigh each review's loss by its class,
    and the mean is taken over those weights.

    Label sets (``labels`` B x labels, 0/1): the binary cross-entropy of every label's own logit, summed over the
    labels (a text's loss does not shrink as the label set grows), each target smoothed towards 0.5;
    ``class_weights`` then weigh each label's positive texts (``pos_weight``)."""
    if labels.dim() == 2:
        target = labels.to(logits.dtype)
        if label_smoothing:
            target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        weight = None if class_weights is None else class_weights.to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="sum") / len(logits)
    if logits.dim() == 2:
        return F.cross_entropy(logits, labels, weight=class_weights, label_smoothing=label_smoothing)
    target = labels.float()
    if label_smoothing:
        target = target * (1 - label_smoothing) + 0.5 * label_smoothing
    if class_weights is None:
        return F.binary_cross_entropy_with_logits(logits, target)
    weight = class_weights.to(logits.dtype)[labels]
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.sum()


def probabilities(logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """Each class's probability (B x classes) from either form of logits; with ``multi_label``, each label's own."""
    if multi_label:
        return torch.sigmoid(logits.float())
    if logits.dim() == 2:
        return torch.softmax(logits.float(), dim=-1)
    positive = torch.sigmoid(logits.float())
    return torch.stack([1 - positive, positive], dim=-1)


def adversarial_losses(net: SentimentNet, input_ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                       epsilon: float, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None,
                       bag_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For adversarial training: the loss, the loss under the worst small shift of each review's embeddings
    (a step of L2 norm ``epsilon`` along the loss gradient; Miyato et al., 2017, "Adversarial Training Methods
    for Semi-Supervised Text Classification"), and the clean logits. Train on the sum of the two losses.

    The same word and embedding dropout noise serves both passes. The clean loss's parameter gradients are
    taken in the same backward pass as the embeddings' gradient, and the returned loss hands them on to
    ``backward()`` without a second pass through the recurrence: a step costs two forward and two backward
    passes.
    """
    input_ids, lengths = net.prepare(input_ids, lengths)
    x, _ = net.embed(input_ids, lengths, reversed_too=False)  # one tensor, so the shift reaches both directions
    bag = net.bag_logits(bag_ids)  # the same for both passes: the shift moves the embeddings only
    logits = net.read(x, input_ids, lengths, bag=bag)
    loss = classification_loss(logits, labels, label_smoothing, class_weights)
    params = [p for p in net.parameters() if p.requires_grad]
    grad, *param_grads = torch.autograd.grad(loss, [x, *params], retain_graph=True, allow_unused=True)
    grad = grad.float()
    shift = epsilon * grad / grad.pow(2).sum(dim=(0, 2), keepdim=True).sqrt().clamp(min=1e-12)
    adversarial_loss = classification_loss(net.read(x + shift.to(x.dtype), input_ids, lengths, bag=bag),
                                           labels, label_smoothing, class_weights)
    taken = [(p, g) for p, g in zip(params, param_grads) if g is not None]
    carried = _TakenGradients.apply([g for _, g in taken], *(p for p, _ in taken))
    return loss.detach() + carried, adversarial_loss, logits


def divergence(target: torch.Tensor, logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """The mean over reviews of KL(p || q): ``p`` the probabilities of the ``target`` logits, held fixed, ``q`` those of
    ``logits``; of label sets, each label's own two-way divergence, summed over the labels."""
    p = probabilities(target.detach(), multi_label)
    if multi_label:
        p, log_q = torch.stack([1 - p, p], -1), torch.stack([F.logsigmoid(-logits.float()),
                                                            F.logsigmoid(logits.float())], -1)
    elif logits.dim() == 1:
        log_q = torch.stack([F.logsigmoid(-logits.float()), F.logsigmoid(logits.float())], -1)
    else:
        log_q = F.log_softmax(logits.float(), -1)
    kl = p * (p.clamp(min=1e-12).log() - log_q)
    return kl.sum() / len(logits)


def entropy(logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """The mean over reviews of the entropy of the predicted distribution (of label sets, summed over the labels):
    minimised on unlabelled reviews, it asks the model to be sure of them (Grandvalet & Bengio, 2005)."""
    if multi_label or logits.dim() == 1:  # two-way distributions, one per logit
        z = logits.float()
        p = torch.sigmoid(z)
        return -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z)).sum() / len(logits)
    log_p = F.log_softmax(logits.float(), -1)
    return -(log_p.exp() * log_p).sum() / len(logits)


def virtual_adversarial_loss(net: SentimentNet, input_ids: torch.Tensor, lengths: torch.Tensor, epsilon: float,
                             bag_ids: torch.Tensor | None = None, xi: float = 0.1
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """For reviews without labels: how far the prediction moves under the small shift of each review's embeddings
    (L2 norm ``epsilon``) that moves it most, found by one step of power iteration from a random shift of norm ``xi``
    (Miyato et al., 2017/2019, virtual adversarial training), and the clean logits. The clean prediction is the target,
    held fixed; the loss's gradient reaches the parameters through the shifted pass. A step costs three forward and two
    backward passes."""
    input_ids, lengths = net.prepare(input_ids, lengths)
    x, _ = net.embed(input_ids, lengths, reversed_too=False)
    bag = net.bag_logits(bag_ids)
    logits = net.read(x, input_ids, lengths, bag=bag)
    real = (torch.arange(x.shape[0], device=x.device)[:, None] < lengths[None, :]).unsqueeze(-1)  # T x B x 1

    def unit(d: torch.Tensor) -> torch.Tensor:  # each review's shift to norm 1 over its real tokens
        d = d * real
        return d / d.pow(2).sum(dim=(0, 2), keepdim=True).sqrt().clamp(min=1e-12)

    probe = (xi * unit(torch.randn(x.shape, device=x.device))).requires_grad_()
    moved = divergence(logits, net.read(x.detach() + probe.to(x.dtype), input_ids, lengths, bag=bag), net.multi_label)
    grad, = torch.autograd.grad(moved, probe)
    shift = epsilon * unit(grad.float())
    loss = divergence(logits, net.read(x + shift.to(x.dtype), input_ids, lengths, bag=bag), net.multi_label)
    return loss, logits


class _TakenGradients(torch.autograd.Function):
    """Zero in value; its backward hands each parameter the gradient given for it. Gradients already taken
    with ``torch.autograd.grad`` join a later ``backward()`` this way, without another pass through their
    graph (and without the two elementwise passes over every parameter that ``sum(p * g)`` would cost)."""

    @staticmethod
    def forward(ctx, grads: list[torch.Tensor], *params: torch.Tensor) -> torch.Tensor:
        ctx.grads = grads
        return params[0].new_zeros((), dtype=torch.float32)

    @staticmethod
    def backward(ctx, scale: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None
        if scale.item() != 1.0:  # a scaled loss (gradient accumulation): scale the gradients alike
            grads = [g * scale for g in grads]
        return (None, *grads)
