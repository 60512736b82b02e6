"""Inner-loop optimizers as pure ``(init, update)`` pairs over parameter dicts.

``state = optimizer.init(params)`` and ``params, state = optimizer.update(grads, state, params)``
never modify their arguments, so the unrolled inner loop is an ordinary differentiable function
of the initial parameters and of any meta-learned optimizer tensors (the Meta-SGD rates), and it
runs unchanged under ``torch.func.vmap``. New optimizers (momentum, Adam with per-step rates)
plug in without changing callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from innerloop.functional.params import Params


class InnerOptimizer(Protocol):
    """What the inner loop needs from an optimizer."""

    def init(self, params: Params) -> Any:
        """The optimizer state for ``params`` (anything; the inner loop only passes it back)."""

    def update(self, grads: Params, state: Any, params: Params) -> tuple[Params, Any]:
        """One step: new parameters and state from gradients, state and current parameters."""


@dataclass(frozen=True)
class SGD:
    """``params[name] - lr * grads[name]``; ``lr`` may be a (learnable) scalar tensor."""

    lr: float | Tensor

    def init(self, params: Params) -> tuple[()]:
        return ()

    def update(self, grads: Params, state: tuple[()], params: Params) -> tuple[Params, tuple[()]]:
        return {name: params[name] - self.lr * grads[name] for name in params}, state


@dataclass(frozen=True)
class PerParameterSGD:
    """``params[name] - rates[name] * grads[name]``: a learned rate per parameter entry (Meta-SGD).

    ``rates`` maps every adapted parameter's name to a tensor of its shape (or one that
    broadcasts to it).
    """

    rates: Mapping[str, Tensor]

    def init(self, params: Params) -> tuple[()]:
        missing = sorted(set(params) - set(self.rates))
        if missing:
            raise KeyError(f"PerParameterSGD has no rate for {missing[0]!r}")
        return ()

    def update(self, grads: Params, state: tuple[()], params: Params) -> tuple[Params, tuple[()]]:
        return {name: params[name] - self.rates[name] * grads[name] for name in params}, state


@dataclass(frozen=True)
class StepwiseSGD:
    """SGD whose rate depends on the inner step: ``params[name] - rates[name][step] * grads[name]``.

    ``rates[name]`` is a 1-D tensor with one rate per inner step (or a scalar rate per step
    broadcast to every parameter with the key ``"*"``). Fixed tensors give a per-step learning-rate
    schedule; learnable ones, one per layer, are the learned per-layer per-step rates of MAML++
    ("LSLR", Antoniou et al. 2019). The state is the step counter.
    """

    rates: Mapping[str, Tensor]

    def _rate(self, name: str, step: int) -> Tensor:
        schedule = self.rates[name] if name in self.rates else self.rates["*"]
        if step >= schedule.shape[0]:
            raise IndexError(f"StepwiseSGD has {schedule.shape[0]} rates for {name!r} but step "
                             f"{step + 1} was requested; give one rate per inner step")
        return schedule[step]

    def init(self, params: Params) -> int:
        missing = sorted(n for n in params if n not in self.rates and "*" not in self.rates)
        if missing:
            raise KeyError(f"StepwiseSGD has no rates for {missing[0]!r}")
        return 0

    def update(self, grads: Params, state: int, params: Params) -> tuple[Params, int]:
        return {n: params[n] - self._rate(n, state) * grads[n] for n in params}, state + 1


@dataclass(frozen=True)
class MomentumSGD:
    """SGD with heavy-ball momentum, in PyTorch's convention (no dampening):

        velocity = momentum * velocity + grads
        params   = params - lr * velocity            (nesterov: lr * (grads + momentum * velocity))

    ``lr`` may be a (learnable) scalar tensor; the velocity starts at zero for every task.
    """

    lr: float | Tensor
    momentum: float = 0.9
    nesterov: bool = False

    def init(self, params: Params) -> Params:
        return {name: torch.zeros_like(tensor) for name, tensor in params.items()}

    def update(self, grads: Params, state: Params, params: Params) -> tuple[Params, Params]:
        velocity = {n: self.momentum * state[n] + grads[n] for n in params}
        if self.nesterov:
            steps = {n: grads[n] + self.momentum * velocity[n] for n in params}
        else:
            steps = velocity
        return {n: params[n] - self.lr * steps[n] for n in params}, velocity


@dataclass(frozen=True)
class AdamState:
    step: int
    first_moment: Params
    second_moment: Params


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015) as a pure update; Reptile's inner optimizer uses ``beta1 = 0``.

        first_moment  = beta1 * first_moment + (1 - beta1) * grads
        second_moment = beta2 * second_moment + (1 - beta2) * grads**2
        params        = params - lr * m_hat / (sqrt(v_hat + eps_root) + eps)

    with bias-corrected ``m_hat``, ``v_hat``. ``eps_root`` inside the square root keeps the
    derivative of ``sqrt`` finite at a zero second moment, which matters when meta-gradients flow
    through the update (second order); 0 gives the textbook Adam.
    """

    lr: float | Tensor = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 0.0

    def init(self, params: Params) -> AdamState:
        zeros = {name: torch.zeros_like(tensor) for name, tensor in params.items()}
        return AdamState(0, zeros, dict(zeros))

    def update(self, grads: Params, state: AdamState, params: Params) -> tuple[Params, AdamState]:
        step = state.step + 1
        first = {n: self.beta1 * state.first_moment[n] + (1 - self.beta1) * grads[n] for n in params}
        second = {n: self.beta2 * state.second_moment[n] + (1 - self.beta2) * grads[n] * grads[n]
                  for n in params}
        first_correction = 1 - self.beta1 ** step
        second_correction = 1 - self.beta2 ** step
        new_params = {
            n: params[n] - self.lr * (first[n] / first_correction)
            / (torch.sqrt(second[n] / second_correction + self.eps_root) + self.eps)
            for n in params
        }
        return new_params, AdamState(step, first, second)
