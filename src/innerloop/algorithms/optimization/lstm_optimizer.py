"""Learning to learn by gradient descent by gradient descent (Andrychowicz et al., NeurIPS 2016).

A small LSTM, shared by every coordinate of every parameter, maps each coordinate's
preprocessed gradient to that coordinate's update; its hidden state (one per coordinate) is
the optimizer state:

    inputs        = preprocess_gradients(grads)                 # [N, 2], N coordinates
    hidden, state = LSTM(inputs, state)                         # num_layers x LSTMCell(hidden_size)
    params        = params + output_scale * output(hidden)      # a linear read-out per coordinate

:class:`LSTMOptimizer` is an inner optimizer of the functional core (``init`` / ``update``,
usable wherever SGD or Adam is), whose weights are meta-learned by truncated backpropagation
through the unrolled optimization of sampled problems
(:func:`innerloop.train.learned_optimizer.meta_train_optimizer`). As in the paper, the gradients
it reads are treated as inputs (``detach_gradients``): the meta-gradient does not flow through
the optimizee's second derivatives.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from innerloop.functional import Params

LSTMState = tuple[tuple[Tensor, Tensor], ...]  # (hidden, cell) per layer, each [N, hidden_size]


def preprocess_gradients(grads: Tensor, exponent: float = 10.0) -> Tensor:
    """``[N] -> [N, 2]``: ``(log|g| / p, sign g)`` where ``|g| >= e^-p``, else ``(-1, e^p g)``.

    The paper's preprocessing (its appendix A, with ``p = exponent``): it keeps gradients of
    very different magnitudes in a range an LSTM can read while keeping their sign.
    """
    threshold = math.exp(-exponent)
    large = grads.abs() >= threshold
    magnitude = torch.log(grads.abs().clamp_min(threshold)) / exponent
    first = torch.where(large, magnitude, torch.full_like(grads, -1.0))
    second = torch.where(large, torch.sign(grads), grads / threshold)
    return torch.stack([first, second], dim=-1)


class LSTMOptimizer(nn.Module):
    """The coordinate-wise LSTM optimizer (see the module docstring).

    Args:
        hidden_size: LSTM units per layer (the paper: 20).
        num_layers: stacked LSTM cells (the paper: 2).
        output_scale: the read-out is multiplied by this (the paper: 0.1).
        exponent: ``p`` of :func:`preprocess_gradients` (the paper: 10).
        detach_gradients: read gradients as constants (the paper's simplification).
    """

    def __init__(self, hidden_size: int = 20, num_layers: int = 2, output_scale: float = 0.1,
                 exponent: float = 10.0, detach_gradients: bool = True) -> None:
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1, got {hidden_size}, {num_layers}")
        self.cells = nn.ModuleList(
            nn.LSTMCell(2 if layer == 0 else hidden_size, hidden_size) for layer in range(num_layers))
        self.output = nn.Linear(hidden_size, 1)
        self.hidden_size = hidden_size
        self.output_scale = output_scale
        self.exponent = exponent
        self.detach_gradients = detach_gradients

    def init(self, params: Params) -> LSTMState:
        """Zero hidden and cell states for every coordinate of ``params``."""
        count = sum(tensor.numel() for tensor in params.values())
        zeros = self.output.weight.new_zeros(count, self.hidden_size)
        return tuple((zeros, zeros) for _ in self.cells)

    def update(self, grads: Params, state: LSTMState, params: Params) -> tuple[Params, LSTMState]:
        names = list(params)
        flat = torch.cat([grads[name].reshape(-1) for name in names])
        if self.detach_gradients:
            flat = flat.detach()
        inputs = preprocess_gradients(flat, self.exponent).to(self.output.weight.dtype)
        new_state = []
        for cell, layer_state in zip(self.cells, state):
            hidden, memory = cell(inputs, layer_state)
            new_state.append((hidden, memory))
            inputs = hidden
        steps = (self.output_scale * self.output(inputs)).squeeze(-1).to(flat.dtype)
        updated, start = {}, 0
        for name in names:
            size = params[name].numel()
            updated[name] = params[name] + steps[start:start + size].view_as(params[name])
            start += size
        return updated, tuple(new_state)
