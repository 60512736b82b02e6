"""Meta-training a learned optimizer by truncated backpropagation through optimization.

For each sampled problem (:mod:`innerloop.tasks.optimizees`) the optimizer runs ``unroll``
steps from the problem's start; every ``truncation`` steps the meta-loss of that window,

    meta_loss = mean_{t in window} loss(params_t, t)       (params_t after t updates)

is backpropagated into the optimizer's weights (through the parameter updates and the LSTM
state, not through the optimizee's second derivatives), the meta-optimizer (Adam) steps, and
the parameters and the optimizer state are detached before the next window (Andrychowicz et
al. 2016, section 3). :func:`optimize` runs any inner optimizer (learned or SGD / Adam) on a
problem and returns its loss curve, for comparisons on held-out problems.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from innerloop.errors import TrainingDiverged
from innerloop.functional import InnerOptimizer, Params
from innerloop.tasks.optimizees import Problem


def _detached(value: Any) -> Any:
    """``value`` (tensors in dicts, lists, tuples, named tuples, dataclasses) cut from its graph."""
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {key: _detached(item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_detached(item) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _detached(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


def window_meta_loss(optimizer: InnerOptimizer, problem: Problem, params: Params, state: Any,
                     start: int, length: int) -> tuple[Tensor, Params, Any]:
    """``length`` updates from step ``start``: the mean loss after each of them (differentiable
    in the optimizer's weights through the updates), and the parameters and state at the end."""
    exact = not getattr(optimizer, "detach_gradients", True)  # gradients as functions of the weights
    window = []
    for step in range(start, start + length):
        if exact:
            point = {name: tensor if tensor.requires_grad else tensor.detach().requires_grad_()
                     for name, tensor in params.items()}
        else:
            point = {name: tensor.detach().requires_grad_() for name, tensor in params.items()}
        with torch.enable_grad():
            grads = dict(zip(point, torch.autograd.grad(problem.loss(point, step), list(point.values()),
                                                        create_graph=exact)))
        params, state = optimizer.update(grads, state, point if exact else params)
        window.append(problem.loss(params, step + 1))
    return torch.stack(window).mean(), params, state


def meta_train_optimizer(optimizer: nn.Module, sample_problem: Callable[[torch.Generator], Problem],
                         meta_steps: int, unroll: int = 100, truncation: int = 20, lr: float = 1e-3,
                         seed: int = 0, log_every: int = 0) -> list[float]:
    """Meta-train ``optimizer`` (an inner optimizer with weights) on ``meta_steps`` problems.

    Returns the mean meta-loss of every problem. Raises :class:`TrainingDiverged` when a
    window's meta-loss is not finite (lower ``lr`` or ``truncation``).
    """
    if meta_steps < 1 or unroll < 1 or not 1 <= truncation <= unroll:
        raise ValueError(f"need meta_steps >= 1 and 1 <= truncation <= unroll; got {meta_steps}, "
                         f"{truncation}, {unroll}")
    meta_optimizer = torch.optim.Adam(optimizer.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for meta_step in range(meta_steps):
        problem = sample_problem(generator)
        params = {name: tensor.clone() for name, tensor in problem.params.items()}
        state = optimizer.init(params)
        windows = []
        for start in range(0, unroll, truncation):
            meta_loss, params, state = window_meta_loss(optimizer, problem, params, state, start,
                                                        min(truncation, unroll - start))
            if not torch.isfinite(meta_loss):
                raise TrainingDiverged(f"the learned optimizer's meta-loss became {float(meta_loss)} "
                                       f"on problem {meta_step + 1}; lower lr (now {lr:g}) or truncation")
            meta_optimizer.zero_grad(set_to_none=True)
            meta_loss.backward()
            meta_optimizer.step()
            params, state = _detached(params), _detached(state)
            windows.append(float(meta_loss.detach()))
        history.append(sum(windows) / len(windows))
        if log_every and (meta_step + 1) % log_every == 0:
            recent = history[-log_every:]
            print(f"meta-step {meta_step + 1}: mean meta-loss {sum(recent) / len(recent):.4f}", flush=True)
    return history


def optimize(problem: Problem, optimizer: InnerOptimizer, steps: int) -> list[float]:
    """Losses ``loss(params_t, t)`` for ``t = 0 .. steps`` of ``optimizer`` run from the start
    (no meta-gradient is kept)."""
    params = {name: tensor.clone() for name, tensor in problem.params.items()}
    state = optimizer.init(params)
    losses = []
    for step in range(steps + 1):
        point = {name: tensor.detach().requires_grad_() for name, tensor in params.items()}
        with torch.enable_grad():
            loss = problem.loss(point, step)
            grads = dict(zip(point, torch.autograd.grad(loss, list(point.values()))))
        losses.append(float(loss.detach()) if torch.isfinite(loss) else math.inf)
        if step < steps:
            with torch.no_grad():
                params, state = optimizer.update(grads, state, point)
            params = {name: tensor.detach() for name, tensor in params.items()}
    return losses
