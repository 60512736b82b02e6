"""Optimization as a model for few-shot learning (Ravi & Larochelle, ICLR 2017).

The learner's parameters are the cell state of a meta-learner LSTM. For each coordinate of the
adapted parameters, at inner step ``t``, with ``grads`` and ``loss`` the support gradient and
loss at ``params``:

    inputs             = [preprocess(grads), preprocess(loss)]                  # 4 numbers
    hidden, memory     = LSTMCell(inputs, (hidden, memory))                     # hidden_size
    input_gate         = sigmoid(input_weights  . [hidden, params, input_gate]  + input_bias)
    forget_gate        = sigmoid(forget_weights . [hidden, params, forget_gate] + forget_bias)
    params             = forget_gate * params - input_gate * grads

starting from the network's meta-learned initial parameters (the paper's ``c_0``) with both
gates at zero. The input gate is a learned, state-dependent learning rate and the forget gate a
learned weight decay; both start near "rate ~ 0.01, keep everything" (input bias in
``[-5, -4]``, forget bias in ``[4, 6]``, as in the paper). As in the paper, the gradients and
losses the LSTM reads are constants: the meta-gradient reaches the initial parameters and the
LSTM's weights through the gates and the ``forget_gate * params`` path, not through second
derivatives. ``preprocess`` is :func:`~innerloop.algorithms.optimization.lstm_optimizer.preprocess_gradients`.
The per-task loop is used (``vectorize`` and ``checkpoint`` are rejected).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from innerloop.algorithms.optimization.gradient_learner import AdaptedState, GradientLearner
from innerloop.algorithms.optimization.lstm_optimizer import preprocess_gradients
from innerloop.functional import Params
from innerloop.functional.params import parameters_of, run

GateState = tuple[Tensor, Tensor, Tensor, Tensor]  # hidden, memory [N, H]; input, forget gates [N]


class MetaLearnerCell(nn.Module):
    """The coordinate-wise update of the meta-learner LSTM (see the module docstring)."""

    def __init__(self, hidden_size: int = 20, exponent: float = 10.0, detach_inputs: bool = True) -> None:
        super().__init__()
        self.lstm = nn.LSTMCell(4, hidden_size)
        self.input_gate = nn.Linear(hidden_size + 2, 1)
        self.forget_gate = nn.Linear(hidden_size + 2, 1)
        with torch.no_grad():
            for gate, (low, high) in ((self.input_gate, (-5.0, -4.0)), (self.forget_gate, (4.0, 6.0))):
                gate.weight.uniform_(-0.01, 0.01)
                gate.bias.uniform_(low, high)
        self.hidden_size = hidden_size
        self.exponent = exponent
        self.detach_inputs = detach_inputs  # the paper's simplification; False: exact (tests)

    def init(self, flat_params: Tensor) -> GateState:
        count = flat_params.shape[0]
        zeros = flat_params.new_zeros(count, self.hidden_size)
        return zeros, zeros, flat_params.new_zeros(count), flat_params.new_zeros(count)

    def forward(self, grads: Tensor, loss: Tensor, params: Tensor, state: GateState) -> tuple[Tensor, GateState]:
        """One update of the flat parameter vector ``params [N]``."""
        hidden, memory, input_gate, forget_gate = state
        if self.detach_inputs:
            grads, loss = grads.detach(), loss.detach()
        losses = preprocess_gradients(loss.reshape(1), self.exponent).expand(grads.shape[0], 2)
        inputs = torch.cat([preprocess_gradients(grads, self.exponent), losses], dim=1)
        hidden, memory = self.lstm(inputs, (hidden, memory))
        input_gate = torch.sigmoid(self.input_gate(
            torch.cat([hidden, params[:, None], input_gate[:, None]], dim=1))).squeeze(1)
        forget_gate = torch.sigmoid(self.forget_gate(
            torch.cat([hidden, params[:, None], forget_gate[:, None]], dim=1))).squeeze(1)
        return forget_gate * params - input_gate * grads, (hidden, memory, input_gate, forget_gate)


class MetaLearnerLSTM(GradientLearner):
    """Ravi & Larochelle's meta-learner LSTM: the inner loop is a learned LSTM update."""

    name = "metalstm"
    default_adapt = "all"

    thread_safe_adaptation = False  # adapt calls torch.func.grad_and_value (not thread-safe)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.vectorize or self.checkpoint:
            raise ValueError("the meta-learner LSTM runs its inner loop per task: set vectorize "
                             "and checkpoint to False")
        self.cell = MetaLearnerCell()

    @property
    def gradient_flow(self) -> str:
        return "through the meta-learner LSTM's gates (gradients and losses read as constants)"

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> AdaptedState:
        self._check_ways(ways)
        params = parameters_of(self.network)
        names = sorted(self.adapted_names)
        frozen = {n: p for n, p in params.items() if n not in self.adapted_names}
        shapes = [params[n].shape for n in names]
        flat = torch.cat([params[n].reshape(-1) for n in names])
        state = self.cell.init(flat)

        def support_loss(values: Tensor, step: int) -> Tensor:
            x, y = self._inner_batch(support_x, support_y, step)
            return self.loss(run(self.network, {**frozen, **self._unflatten(values, names, shapes)}, x), y)

        for step in range(self.current_inner_steps):
            point = flat.detach() if self.cell.detach_inputs else flat
            grads, loss = torch.func.grad_and_value(support_loss)(point, step)
            flat, state = self.cell(grads, loss, flat, state)
        return AdaptedState({**frozen, **self._unflatten(flat, names, shapes)}, support_x)

    @staticmethod
    def _unflatten(values: Tensor, names: list[str], shapes: list[torch.Size]) -> Params:
        params, start = {}, 0
        for name, shape in zip(names, shapes):
            size = shape.numel()
            params[name] = values[start:start + size].view(shape)
            start += size
        return params
