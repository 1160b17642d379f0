"""The network: plain PyTorch, no Lightning, reusable in any training loop.

    token ids -> Embedding -> recurrent encoder (LSTM or GRU) -> pooling over time -> dropout -> Linear -> logit

Padding never reaches the result: the encoder runs on packed sequences and every pooling masks padded
steps, so a review gives the same logit whether it is batched alone or beside longer ones.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Cell = Literal["lstm", "gru"]
Pooling = Literal["last", "mean", "max", "mean_max", "attention"]
CELLS = ("lstm", "gru")
POOLINGS = ("last", "mean", "max", "mean_max", "attention")


class AdditivePooling(nn.Module):
    """Learned additive (Bahdanau-style) attention over time; padded steps get zero weight."""

    def __init__(self, dim: int, attn_dim: int = 64) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, attn_dim)
        self.score = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(torch.tanh(self.proj(states))).squeeze(-1)  # B x T
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        return torch.bmm(weights.unsqueeze(1), states).squeeze(1), weights


class SentimentNet(nn.Module):
    """Embedding -> LSTM/GRU -> pooling -> dropout -> Linear, giving one logit per review (> 0: positive).

    Args:
        vocab_size: number of token ids.
        embed_dim: embedding width.
        hidden_dim: recurrent state width (per direction).
        cell: ``lstm`` or ``gru``.
        num_layers: stacked recurrent layers.
        bidirectional: read the review in both directions.
        pooling: how the sequence of states becomes one vector: ``last`` (state at the last real token),
            ``mean``, ``max``, ``mean_max`` (both, concatenated) or ``attention`` (learned weights).
        dropout: dropout before the output layer (and between stacked layers).
        embed_dropout: dropout on the embeddings.
        pad_id: id of the padding token (its embedding stays zero).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 64,
        cell: Cell = "lstm",
        num_layers: int = 1,
        bidirectional: bool = False,
        pooling: Pooling = "last",
        dropout: float = 0.5,
        embed_dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.embed_dropout = nn.Dropout(embed_dropout)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(embed_dim, hidden_dim, num_layers=num_layers, batch_first=True,
                       bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        state_dim = hidden_dim * (2 if bidirectional else 1)
        self.attention = AdditivePooling(state_dim) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(state_dim * (2 if pooling == "mean_max" else 1), 1)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor,
                return_attention: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B) for ``input_ids`` (B x T, right-padded) of real ``lengths`` (B).

        With ``return_attention``, also the attention weights (B x T; None unless pooling is attention).
        An empty review (length 0) is read as a single padding token.
        """
        lengths = lengths.clamp(min=1, max=input_ids.size(1))
        x = self.embed_dropout(self.embedding(input_ids))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        weights = None
        if self.pooling == "last":
            h = hidden[0] if isinstance(hidden, tuple) else hidden  # (layers * dirs) x B x H
            if self.rnn.bidirectional:
                pooled = torch.cat([h[-2], h[-1]], dim=1)  # forward at the last token, backward at the first
            else:
                pooled = h[-1]
        else:
            states, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.size(1))
            mask = torch.arange(states.size(1), device=states.device)[None, :] < lengths[:, None].to(states.device)
            if self.pooling == "attention":
                pooled, weights = self.attention(states, mask)
            else:
                pooled = _masked_pool(states, mask, self.pooling)
        logits = self.head(self.dropout(pooled)).squeeze(-1)
        return (logits, weights) if return_attention else logits


def _masked_pool(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    m = mask.unsqueeze(-1)
    parts = []
    if pooling in ("mean", "mean_max"):
        parts.append((states * m).sum(1) / m.sum(1).clamp(min=1))
    if pooling in ("max", "mean_max"):
        parts.append(states.masked_fill(~m, float("-inf")).max(1).values)
    return torch.cat(parts, dim=1)


def binary_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy on logits (numerically stable), with optional label smoothing."""
    target = labels.float()
    if label_smoothing:
        target = target * (1 - label_smoothing) + 0.5 * label_smoothing
    return F.binary_cross_entropy_with_logits(logits, target)
