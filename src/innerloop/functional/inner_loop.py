"""The unrolled inner loop shared by every gradient-based meta-learner.

``inner_loop`` takes ``num_steps`` optimizer steps on ``loss_fn`` over the parameters that pass
the adaptation filter, starting from the meta-parameters, and returns all parameters (adapted
and frozen) as a dict. How the meta-gradient flows back through it is one explicit choice:

* ``"second"`` — differentiate through the unrolled steps, including the inner gradients
  (MAML; the Hessian-vector products appear in the outer backward pass);
* ``"first"`` — stop gradients at the inner gradients: ``grads`` are constants, so
  ``d adapted / d params`` is the identity (first-order MAML). The inner gradients are then
  computed on detached parameters, so no graph is built for them at all.

Inner gradients come from ``torch.func.grad`` under any ``torch.func`` transform (so the vmapped
path runs the same code as the loop) and from ``torch.autograd.grad`` otherwise — the same
numbers, and unlike ``torch.func.grad`` it may run in several threads at once (the per-task
loop's task workers, see ``GradientLearner``; two threads of ``torch.func.grad`` in the per-task
loop failed here with an internal functorch assertion). When autograd is disabled (evaluation),
the loop runs first order and keeps no graph. First-order inner gradients are constants on the
loop path, also with respect to tensors the loss captures (data that requires a gradient);
under ``vmap``, ``torch.func.grad`` keeps their dependence on such captured tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import torch
import torch.utils.checkpoint
from torch import Tensor

from innerloop.functional.inner_optimizers import InnerOptimizer
from innerloop.functional.params import Params
from innerloop.functional.transforms import inside_transform

ORDERS = ("second", "first")

# loss_fn(params, step) -> scalar loss; ``step`` lets a method use a different minibatch per step.
InnerLoss = Callable[[Params, int], Tensor]
# on_step(steps_done, params): sees all parameters after each step (MAML++'s per-step query loss).
StepObserver = Callable[[int, Params], None]


def inner_loop(loss_fn: InnerLoss, params: Params, adapted: Collection[str],
               optimizer: InnerOptimizer, num_steps: int, order: str = "second",
               checkpoint: bool = False, on_step: StepObserver | None = None) -> Params:
    """Adapt ``params[adapted]`` by ``num_steps`` steps of ``optimizer`` on ``loss_fn``.

    Args:
        loss_fn: the support loss of one task as a function of all parameters and the step.
        params: the meta-parameters (all of the network's parameters, by name).
        adapted: names of the parameters the inner loop changes; the others stay as given.
        optimizer: an :class:`~innerloop.functional.inner_optimizers.InnerOptimizer`.
        num_steps: number of inner steps (0 returns ``params`` unchanged).
        order: ``"second"`` or ``"first"`` (see the module docstring).
        checkpoint: second order only — keep no activations of the inner steps; each step is
            recomputed during the backward pass (``torch.utils.checkpoint``), so activation
            memory stops growing with the number of steps (each step's parameters and optimizer
            state are still kept) at the price of one more forward-backward per step.
            Inner gradients are then taken with ``torch.autograd.grad`` (``torch.func`` transforms
            do not support checkpointing), so this path cannot run under ``vmap``.
        on_step: called as ``on_step(k, params)`` after the ``k``-th step (1-based) with all
            parameters at that point, for objectives that look at the whole trajectory.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got '{order}'")
    unknown = sorted(set(adapted) - set(params))
    if unknown:
        raise KeyError(f"cannot adapt {unknown[0]!r}: the network has no parameter of that name")
    first_order = order == "first" or not torch.is_grad_enabled()
    fast = {name: params[name] for name in params if name in adapted}
    frozen = {name: tensor for name, tensor in params.items() if name not in adapted}
    if first_order:
        frozen_for_grad = {name: tensor.detach() for name, tensor in frozen.items()}
    state = optimizer.init(fast)
    if checkpoint and not first_order:
        return {**frozen, **_checkpointed_steps(loss_fn, frozen, fast, optimizer, state, num_steps,
                                                on_step)}
    for step in range(num_steps):
        if first_order:
            point = {name: tensor.detach() for name, tensor in fast.items()}
            grads = gradient(lambda p: loss_fn({**frozen_for_grad, **p}, step), point, False)
        else:
            grads = gradient(lambda p: loss_fn({**frozen, **p}, step), fast, True)
        fast, state = optimizer.update(grads, state, fast)
        if on_step is not None:
            on_step(step + 1, {**frozen, **fast})
    return {**frozen, **fast}


def gradient(loss_of: Callable[[Params], Tensor], point: Params, differentiable: bool) -> Params:
    """``d loss_of(point) / d point``; ``differentiable``: keep the graph of the gradient itself
    (second order). ``torch.func.grad`` under a transform, ``torch.autograd.grad`` otherwise;
    a constant entry of ``point`` (no graph) is differentiated as a fresh leaf either way."""
    if inside_transform():
        return torch.func.grad(loss_of)(point)
    names = list(point)
    inputs = [t if t.requires_grad else t.detach().requires_grad_() for t in point.values()]
    with torch.enable_grad():
        loss = loss_of(dict(zip(names, inputs)))
        grads = torch.autograd.grad(loss, inputs, create_graph=differentiable, allow_unused=True)
    return {name: torch.zeros_like(t) if g is None else g for name, t, g in zip(names, inputs, grads)}


def _checkpointed_steps(loss_fn: InnerLoss, frozen: Params, fast: Params, optimizer: InnerOptimizer,
                        state: Any, num_steps: int, on_step: StepObserver | None) -> Params:
    """Second-order inner steps, each recomputed in the backward pass instead of stored."""
    names = list(fast)

    def one_step(step: int, state: Any, *values: Tensor) -> tuple[tuple[Tensor, ...], Any]:
        # A starting point that is a constant (CAVIA's zero context) still needs a gradient.
        values = tuple(v if v.requires_grad else v.detach().requires_grad_() for v in values)
        current = dict(zip(names, values))
        with torch.enable_grad():
            loss = loss_fn({**frozen, **current}, step)
            grads = torch.autograd.grad(loss, values, create_graph=True, allow_unused=True)
        grads = {n: g if g is not None else torch.zeros_like(current[n]) for n, g in zip(names, grads)}
        new, new_state = optimizer.update(grads, state, current)
        return tuple(new[n] for n in names), new_state

    values = tuple(fast[n] for n in names)
    for step in range(num_steps):
        values, state = torch.utils.checkpoint.checkpoint(one_step, step, state, *values,
                                                          use_reentrant=False)
        if on_step is not None:
            on_step(step + 1, {**frozen, **dict(zip(names, values))})
    return dict(zip(names, values))
