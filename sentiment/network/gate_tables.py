"""Float32 inference through per-word gate tables: ``SentimentNet``'s answers in about half the time on CPUs.

At each step an LSTM adds two products to its gates: the input word's embedding times the input weights, and the
previous state times the recurrent weights. Once a network is trained, the first product depends on the word alone,
so it is computed once for every word of the vocabulary (a table of ``4 x hidden`` numbers a word and direction,
biases included) and looked up: two thirds of the recurrence's arithmetic are gone. What is left runs as a few
whole-batch operations a step, both directions at once:

- one lookup of the step's words and one batched matrix product of the two directions' states;
- the backward direction reads the review from its right end, the padding first, with its input and output gates
  shut (-inf) on padded positions, so its state is still zero at the last real word: no reversal within lengths;
- every gate through one sigmoid: tanh(z) = 2 sigmoid(2z) - 1, the factors folded into the tables and weights
  (ATen's tanh is several times slower than its sigmoid on AVX2), the cell kept doubled, the states negated,
  with the weights that read them negated to match.

The same function as ``SentimentNet.forward`` in float32, in another order of additions (logits within 1e-5;
tested). For a handful of reviews PyTorch's own LSTM kernel is faster (a step here costs a few operations whatever
the batch), so the ``Predictor`` uses these tables from ``TABLES_FROM`` reviews a batch. Plain PyTorch, no Lightning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sentiment.network.model import SentimentNet, summary_states

TABLES_FROM = 8  # reviews a batch: below this PyTorch's LSTM answers sooner (BENCHMARKS.md)


def _gate_rows(w: torch.Tensor, hidden: int) -> torch.Tensor:
    """PyTorch's gate order (input, forget, cell, output) as (input, forget, output, cell), the cell gate's rows
    doubled: its tanh is then 2 sigmoid - 1, so one sigmoid covers every gate."""
    i, f, g, o = w.split(hidden, 0)
    return torch.cat([i, f, o, 2 * g], 0)


class GateTables:
    """A trained ``SentimentNet``'s inference in float32 through per-word gate tables (see the module).

    Built once from the network's weights (about ``2 x vocab_size x 4 x hidden`` float32 numbers: 61 MB for the
    default recipe); the weights must not change afterwards.
    """

    @staticmethod
    def supports(net: SentimentNet) -> bool:
        """Networks these tables compute: one LSTM layer (one direction or two), with any pooling and bag."""
        layers = net.encoder.layers
        return len(layers) == 1 and isinstance(layers[0][0], torch.nn.LSTM)

    def __init__(self, net: SentimentNet) -> None:
        if not self.supports(net):
            raise ValueError("gate tables compute networks of one LSTM layer (no GRU, no stacked layers)")
        self.net = net
        directions = net.encoder.layers[0]
        hidden = directions[0].hidden_size
        with torch.no_grad():
            embedding = net.embedding.weight.float()
            tables = [embedding @ _gate_rows(lstm.weight_ih_l0, hidden).t()
                      + _gate_rows(lstm.bias_ih_l0 + lstm.bias_hh_l0, hidden) for lstm in directions]
            shut = torch.zeros(1, 4 * hidden)  # a backward position past the review's end: input, output gates shut
            shut[0, :hidden] = shut[0, 2 * hidden: 3 * hidden] = float("-inf")
            self.table = torch.cat([*tables, shut]).contiguous()  # words of each direction, then the shut row
            # the states are kept negated (the loop's last operation): whatever reads them is negated too
            self.recurrent = torch.stack([-_gate_rows(lstm.weight_hh_l0, hidden).t() for lstm in directions])
            if net.attention is not None:  # tanh(z) = 2 sigmoid(2z) - 1: the constant cancels in the softmax
                proj = -2 * net.attention.proj.weight.float()
                self.proj = [proj[:, d * hidden: (d + 1) * hidden].t().contiguous() for d in range(len(directions))]
                self.proj_bias = 2 * net.attention.proj.bias.float()
                self.score = 2 * net.attention.score.weight.float()[0]
            self.head_weight, self.head_bias = -net.head.weight.float(), net.head.bias.float()
        self.vocab_size, self.hidden, self.directions = embedding.size(0), hidden, len(directions)

    def __call__(self, input_ids: torch.Tensor, lengths: torch.Tensor,
                 bag_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``input_ids`` (B x T, right-padded) of ``lengths`` (B), as ``SentimentNet.forward`` gives them."""
        net, hidden, directions, vocab = self.net, self.hidden, self.directions, self.vocab_size
        input_ids, lengths = net.prepare(input_ids, lengths)
        batch, steps = input_ids.shape
        ids = input_ids.t()  # T x B
        rows = [ids]
        if directions == 2:  # step t reads position T-1-t, from the right end: past the review's end, the shut row
            backward = ids.flip(0) + vocab
            past_end = torch.arange(steps - 1, -1, -1)[:, None] >= lengths[None, :]
            rows.append(backward.masked_fill_(past_end, 2 * vocab))
        rows = torch.cat(rows, 1).contiguous()  # T x (directions * B)
        states = torch.empty(directions, steps, batch, hidden)  # negated; backward ones in reading order
        cell = torch.zeros(directions, batch, hidden)  # twice the cell state
        state = torch.zeros(directions, batch, hidden)
        squashed = torch.empty(directions, batch, hidden)
        gates = torch.empty(directions * batch, 4 * hidden)
        # every view made once: a step is seven calls into PyTorch, each of which takes Python's lock
        g = gates.view(directions, batch, 4 * hidden)
        i, f, o, c = g.split(hidden, 2)
        for step_rows, step_state in zip(rows.unbind(0), states.unbind(1)):
            torch.index_select(self.table, 0, step_rows, out=gates)
            g.baddbmm_(state, self.recurrent).sigmoid_()
            cell.mul_(f).addcmul_(i, c, value=4).add_(i, alpha=-2)  # f * cell + i * tanh(.), doubled
            torch.sigmoid(cell, out=squashed)
            state = torch.addcmul(o, o, squashed, value=-2, out=step_state)  # -(o * tanh(cell))
        logits = F.linear(self._pooled(states, lengths), self.head_weight, self.head_bias)
        bag = net.bag_logits(bag_ids)
        if bag is not None:
            logits = logits + bag
        return logits.squeeze(-1) if logits.size(-1) == 1 else logits

    def _pooled(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``SentimentNet``'s pooling of the (negated) states, negated. Attention's arithmetic is folded into the
        tables' (it reads the states as they come: negated, the backward ones in reading order); every other pooling
        is the network's own, of the states laid out as the network's (by position, not negated)."""
        directions, steps, batch, hidden = states.shape
        mask = torch.arange(steps)[:, None] < lengths[None, :]  # T x B, by position
        if self.net.pooling == "attention":
            scores = self.proj_bias.expand(steps, batch, -1).clone()
            for d in range(directions):
                projected = (states[d].view(steps * batch, hidden) @ self.proj[d]).view(steps, batch, -1)
                scores.add_(projected.flip(0) if d else projected)  # the backward states by position
            scores = scores.sigmoid_() @ self.score  # T x B
            weights = torch.softmax(scores.masked_fill_(~mask, float("-inf")), dim=0).unsqueeze(-1)
            return torch.cat([(w * states[d]).sum(0) for d, w in enumerate([weights, weights.flip(0)][:directions])],
                             1)
        by_position = torch.cat([states[0], *(s.flip(0) for s in states[1:])], 2).neg_()
        pooled, _ = self.net.pool(by_position, summary_states(by_position, lengths, directions), mask)
        return pooled.neg_()
