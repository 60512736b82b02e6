"""Memory-augmented neural network (Santoro, Bartunov, Botvinick, Wierstra & Lillicrap, ICML 2016).

An LSTM controller with an external memory ``memory [N slots, M]`` reads a sequence in which
each label arrives one step after its input: at step ``t`` the input is
``[backbone(x_t), one_hot(y_{t-1}), reads_{t-1}]`` and the output is the prediction of ``y_t``.
Per step, with ``R`` read heads (each with a key ``k_t`` and a gate ``alpha_t``):

    h_t, c_t = LSTM(input_t, (h_{t-1}, c_{t-1}))
    k_t = tanh(W_key h_t),   sigma_t = sigmoid(W_gate h_t),   beta_t = 1 + softplus(W_strength h_t)
    least-used access (LRU): least_used_{t-1} marks the R slots of smallest usage_{t-1};
        the least-used slot is zeroed, then
        write_weights_t = sigma_t read_weights_{t-1} + (1 - sigma_t) least_used_{t-1}
        memory_t = memory_{t-1} + write_weights_t^T k_t
    read_weights_t = softmax_i (beta_t cos(k_t, memory_t[i])),    reads_t = read_weights_t memory_t
    usage_t = usage_decay * usage_{t-1} + sum_heads (read_weights_t + write_weights_t)
    logits_t = W_out [h_t, reads_t]

Training (as in the paper): the support and query examples of each task, shuffled into one
sequence, with the cross-entropy of every step's prediction. :meth:`sequence_logits` and
:func:`accuracy_by_presentation` give the paper's accuracy by the presentation index of the
class (1st, 2nd, ..., instance). Episodic N-way K-shot evaluation reads the support sequence,
then continues the final state with each query separately (its step carries the last support
label, which arrives one step late): not transductive.

Deviations: the inputs are the library's backbone embeddings (trained jointly) rather than the
paper's flattened 20x20 pixels; and each read head has a learned key strength ``beta_t`` (as in
the Neural Turing Machine's content addressing). Without it a softmax over cosines in [-1, 1]
spreads every read over all 128 slots almost uniformly, and in our runs the network stayed at
chance for the first thousands of episodes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.embedding_learner import EmbeddingLearner
from innerloop.tasks.episodes import Episodes

MEMORY_INIT = 1e-6  # the initial value of every memory cell (cosine similarity needs a nonzero norm)


def least_used(usage: Tensor, count: int) -> Tensor:
    """``[B, N]`` usage → ``[B, N]`` indicator of the ``count`` least-used slots (ties: lowest index)."""
    ranks = torch.argsort(torch.argsort(usage, dim=-1, stable=True), dim=-1)
    return (ranks < count).to(usage.dtype)


def cosine_read_weights(keys: Tensor, memory: Tensor, strengths: Tensor | float = 1.0) -> Tensor:
    """Softmax over slots of ``strengths`` times the cosine similarity: keys ``[B, R, M]``,
    memory ``[B, N, M]``, strengths ``[B, R, 1]`` → ``[B, R, N]``."""
    cosine = F.normalize(keys, dim=-1) @ F.normalize(memory, dim=-1).transpose(-1, -2)
    return torch.softmax(strengths * cosine, dim=-1)


def lru_write(memory: Tensor, keys: Tensor, gates: Tensor, previous_read_weights: Tensor,
              previous_least_used: Tensor, previous_usage: Tensor) -> tuple[Tensor, Tensor]:
    """One least-recently-used write: returns the new memory ``[B, N, M]`` and write weights ``[B, R, N]``.

    ``gates [B, R, 1]`` interpolate between the slots read last step and the least-used slots;
    the single least-used slot (smallest ``previous_usage``) is zeroed before writing.
    """
    write_weights = gates * previous_read_weights + (1 - gates) * previous_least_used.unsqueeze(1)
    cleared = memory * (1 - least_used(previous_usage, 1)).unsqueeze(-1)
    return cleared + write_weights.transpose(-1, -2) @ keys, write_weights


class MemoryAugmentedNetwork(EmbeddingLearner):
    """MANN: LSTM controller, external memory with least-recently-used writes."""

    name = "mann"
    fixed_ways = True
    adaptation = "one forward pass of the support set and one controller step per support example"

    def __init__(self, backbone: nn.Module, ways: int | None = None, controller_size: int = 200,
                 memory_slots: int = 128, memory_width: int = 40, read_heads: int = 4,
                 usage_decay: float = 0.95) -> None:
        super().__init__(backbone, ways)
        self.memory_slots, self.memory_width, self.read_heads = memory_slots, memory_width, read_heads
        self.usage_decay = usage_decay
        reads = read_heads * memory_width
        self.controller = nn.LSTMCell(backbone.embedding_dim + self.ways + reads, controller_size)
        self.keys = nn.Linear(controller_size, reads)
        self.gates = nn.Linear(controller_size, read_heads)
        self.strengths = nn.Linear(controller_size, read_heads)
        self.readout = nn.Linear(controller_size + reads, self.ways)

    def initial_state(self, batch: int, like: Tensor) -> dict[str, Tensor]:
        zeros = like.new_zeros
        return {"hidden": zeros(batch, self.controller.hidden_size), "cell": zeros(batch, self.controller.hidden_size),
                "memory": like.new_full((batch, self.memory_slots, self.memory_width), MEMORY_INIT),
                "read_weights": zeros(batch, self.read_heads, self.memory_slots),
                "usage": zeros(batch, self.memory_slots),
                "reads": zeros(batch, self.read_heads * self.memory_width)}

    def step(self, state: dict[str, Tensor], inputs: Tensor, previous_label: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One time step: ``inputs [B, D]``, ``previous_label [B, ways]`` (one-hot or zeros) → logits, state."""
        hidden, cell = self.controller(torch.cat([inputs, previous_label, state["reads"]], -1),
                                       (state["hidden"], state["cell"]))
        batch = inputs.shape[0]
        keys = torch.tanh(self.keys(hidden)).view(batch, self.read_heads, self.memory_width)
        gates = torch.sigmoid(self.gates(hidden)).unsqueeze(-1)
        memory, write_weights = lru_write(state["memory"], keys, gates, state["read_weights"],
                                          least_used(state["usage"], self.read_heads), state["usage"])
        strengths = 1 + F.softplus(self.strengths(hidden)).unsqueeze(-1)
        read_weights = cosine_read_weights(keys, memory, strengths)
        reads = (read_weights @ memory).flatten(1)
        usage = self.usage_decay * state["usage"] + read_weights.sum(1) + write_weights.sum(1)
        logits = self.readout(torch.cat([hidden, reads], -1))
        return logits, {"hidden": hidden, "cell": cell, "memory": memory, "read_weights": read_weights,
                        "usage": usage, "reads": reads}

    def run_sequence(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``inputs [B, L, D]`` with ``labels [B, L]`` arriving one step late → logits ``[B, L, ways]``."""
        batch, length = labels.shape
        state = self.initial_state(batch, inputs)
        one_hot = F.one_hot(labels, self.ways).to(inputs.dtype)
        previous = torch.zeros_like(one_hot[:, 0])
        outputs = []
        for t in range(length):
            logits, state = self.step(state, inputs[:, t], previous)
            outputs.append(logits)
            previous = one_hot[:, t]
        return torch.stack(outputs, 1), state

    def logits_from_embeddings(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        _, state = self.run_sequence(support, support_y)
        num_queries = query.shape[1]
        state = {key: value.repeat_interleave(num_queries, dim=0) for key, value in state.items()}
        last_label = F.one_hot(support_y[:, -1], ways).to(query.dtype).repeat_interleave(num_queries, dim=0)
        logits, _ = self.step(state, query.flatten(0, 1), last_label)
        return logits.view(*query.shape[:2], ways)

    def sequence_logits(self, episodes: Episodes, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, Tensor, Tensor]:
        """Each task's support and query examples shuffled into one sequence.

        Returns logits ``[T, L, ways]``, labels ``[T, L]`` and the presentation index of each
        step's class (1 for its first instance in the sequence, 2 for the second, ...).
        """
        self.check_ways(episodes.ways)
        images = torch.cat([episodes.support_x, episodes.query_x], 1)
        labels = torch.cat([episodes.support_y, episodes.query_y], 1)
        order = torch.argsort(torch.rand(labels.shape, generator=generator), dim=1)
        labels = torch.gather(labels, 1, order)
        images = images[torch.arange(labels.shape[0]).unsqueeze(1), order]
        embeddings = self.backbone(images.flatten(0, 1)).unflatten(0, labels.shape)
        logits, _ = self.run_sequence(embeddings, labels)
        one_hot = F.one_hot(labels, episodes.ways)
        presentation = (one_hot.cumsum(1) * one_hot).sum(-1)
        return logits, labels, presentation

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of every step of the shuffled sequences (the paper's objective)."""
        logits, labels, _ = self.sequence_logits(episodes)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return loss, {"accuracy": float((logits.argmax(-1) == labels).float().mean())}


@torch.no_grad()
def accuracy_by_presentation(learner: MemoryAugmentedNetwork, batches: Iterable[Episodes], seed: int = 0) -> Tensor:
    """Per-episode accuracy by presentation index (sequences shuffled with ``seed``).

    Returns ``[episodes, I]``: entry ``[e, i]`` is the accuracy of episode ``e``'s predictions at
    the ``i+1``-th instance of a class (every episode has the same classes and instance counts).
    """
    was_training = learner.training
    learner.eval()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    try:
        for episodes in batches:
            logits, labels, presentation = learner.sequence_logits(episodes, generator)
            hits = (logits.argmax(-1) == labels).to(torch.float64)
            index = F.one_hot(presentation - 1).to(torch.float64)  # [T, L, I]
            rows.append((hits.unsqueeze(-1) * index).sum(1) / index.sum(1))
    finally:
        learner.train(was_training)
    if not rows:
        raise ValueError("accuracy_by_presentation needs at least one batch of episodes")
    return torch.cat(rows)
