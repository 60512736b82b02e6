"""SNAIL: a simple neural attentive meta-learner (Mishra, Rohaninejad, Chen & Abbeel, ICLR 2018).

The task is a sequence: the support examples ``[backbone(x_i), one_hot(y_i)]`` in order, then
the query ``[backbone(x_q), 0]``, whose label is predicted from the last position. The network
interleaves causal attention blocks and temporal-convolution blocks, the paper's Omniglot
architecture:

    AttentionBlock(64, 32) → TCBlock(128) → AttentionBlock(256, 128) → TCBlock(128)
      → AttentionBlock(512, 256) → linear readout to ``ways`` logits

* ``DenseBlock(dilation, F)``: ``concat(x, tanh(conv_f(x)) * sigmoid(conv_g(x)))`` with causal
  convolutions of kernel 2: ``conv(x)[t] = A x[t - dilation] + B x[t]``;
* ``TCBlock(F)``: dense blocks with dilations ``2, 4, ..., 2^ceil(log2 L)`` for sequences of
  length ``L = S + 1``;
* ``AttentionBlock(K, V)``: ``concat(x, softmax(q k^T / sqrt(K), causal) v)``.

Every query is its own sequence (support, query), as in the paper, so predictions do not depend
on the other queries. Since everything is causal, the support part of those sequences is the
same for every query; it is computed once per task and each query is the sequence's last
position (``S``) attached to it — the same numbers as Q separate sequences at a fraction of the
cost. The support order matters (a sequence model), so support sets are shuffled while
training; evaluation presents them in the sampler's order (label-sorted, one of the orders seen
in training), so scores are deterministic. With the paper's dilations the last dense block's
``A`` tap always reaches before the sequence start and stays unused. The temporal-convolution
depth is set by the training sequence length; longer support sets at evaluation are read by the
attention blocks in full and by the convolutions up to their reach.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.embedding_learner import EmbeddingLearner, shuffle_support
from innerloop.tasks.episodes import Episodes

Stream = tuple[Tensor, Tensor]  # (support [T, S, C], queries [T, Q, C]); each query sits at position S


class CausalConv(nn.Module):
    """Kernel-2 dilated causal convolution over the stream: ``A x[t - dilation] + B x[t]``."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__()
        self.previous = nn.Linear(in_channels, out_channels, bias=False)  # A
        self.current = nn.Linear(in_channels, out_channels)  # B
        self.dilation = dilation

    def forward(self, stream: Stream) -> Stream:
        support, queries = stream
        length = support.shape[1]
        shifted = F.pad(support, (0, 0, self.dilation, 0))[:, :length]
        support_out = self.previous(shifted) + self.current(support)
        if length - self.dilation >= 0:
            earlier = self.previous(support[:, length - self.dilation]).unsqueeze(1)
        else:
            earlier = 0.0
        return support_out, earlier + self.current(queries)


class DenseBlock(nn.Module):
    def __init__(self, in_channels: int, filters: int, dilation: int) -> None:
        super().__init__()
        self.conv = CausalConv(in_channels, 2 * filters, dilation)

    def forward(self, stream: Stream) -> Stream:
        outputs = self.conv(stream)
        return tuple(torch.cat([x, torch.tanh(o.chunk(2, -1)[0]) * torch.sigmoid(o.chunk(2, -1)[1])], -1)
                     for x, o in zip(stream, outputs))


class TCBlock(nn.Module):
    def __init__(self, in_channels: int, filters: int, sequence_length: int) -> None:
        super().__init__()
        count = max(1, math.ceil(math.log2(sequence_length)))
        self.blocks = nn.ModuleList(DenseBlock(in_channels + i * filters, filters, 2 ** (i + 1))
                                    for i in range(count))
        self.out_channels = in_channels + count * filters

    def forward(self, stream: Stream) -> Stream:
        for block in self.blocks:
            stream = block(stream)
        return stream


class AttentionBlock(nn.Module):
    def __init__(self, in_channels: int, key_size: int, value_size: int) -> None:
        super().__init__()
        self.keys = nn.Linear(in_channels, key_size, bias=False)  # a key bias shifts a whole softmax row
        self.queries = nn.Linear(in_channels, key_size)
        self.values = nn.Linear(in_channels, value_size)
        self.scale = 1.0 / math.sqrt(key_size)
        self.out_channels = in_channels + value_size

    def forward(self, stream: Stream) -> Stream:
        support, queries = stream
        length = support.shape[1]
        keys, values = self.keys(support), self.values(support)
        causal = torch.ones(length, length, dtype=torch.bool, device=support.device).tril()
        scores = (self.queries(support) @ keys.transpose(-1, -2)) * self.scale
        support_read = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ values
        # a query sees every support position and itself
        query_query = self.queries(queries)
        to_support = (query_query @ keys.transpose(-1, -2)) * self.scale  # [T, Q, S]
        to_self = (query_query * self.keys(queries)).sum(-1, keepdim=True) * self.scale  # [T, Q, 1]
        weights = torch.softmax(torch.cat([to_support, to_self], -1), -1)
        query_read = weights[..., :length] @ values + weights[..., length:] * self.values(queries)
        return torch.cat([support, support_read], -1), torch.cat([queries, query_read], -1)


class SNAIL(EmbeddingLearner):
    """SNAIL over (embedding, label) sequences ending in the query."""

    name = "snail"
    fixed_ways = True
    adaptation = "one forward pass of the support set and one causal pass over the sequence"

    def __init__(self, backbone: nn.Module, ways: int | None = None, shots: int = 1) -> None:
        super().__init__(backbone, ways)
        length = self.ways * shots + 1
        channels = backbone.embedding_dim + self.ways
        layers: list[nn.Module] = []
        for key_size, value_size, tc_filters in ((64, 32, 128), (256, 128, 128), (512, 256, None)):
            attention = AttentionBlock(channels, key_size, value_size)
            layers.append(attention)
            channels = attention.out_channels
            if tc_filters is not None:
                tc = TCBlock(channels, tc_filters, length)
                layers.append(tc)
                channels = tc.out_channels
        self.layers = nn.ModuleList(layers)
        self.readout = nn.Linear(channels, self.ways)

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> SNAIL:
        return cls(backbone, ways=config.train.ways, shots=config.train.shots)

    def logits_from_embeddings(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        stream: Stream = (torch.cat([support, F.one_hot(support_y, ways).to(support.dtype)], -1),
                          F.pad(query, (0, ways)))
        for layer in self.layers:
            stream = layer(stream)
        return self.readout(stream[1])

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """Query cross-entropy with each task's support order shuffled (a sequence model must not
        learn the sampler's label-sorted order)."""
        shuffled = shuffle_support(episodes)
        return self._classification_loss(self.query_logits(shuffled), shuffled)
