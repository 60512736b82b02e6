"""iMAML — implicit MAML (Rajeswaran, Finn, Kakade & Levine, NeurIPS 2019).

Inner problem, for each task, over the adapted parameters ``adapted`` from ``params``:

    adapted = argmin_phi  support_loss(phi) + proximal_strength / 2 * || phi - params ||^2

approximated by ``num_steps`` steps of the inner optimizer from ``params``, first order: no graph
is kept across inner steps, so memory does not grow with them. Meta-gradient of a task, by the
implicit function theorem (:func:`~innerloop.functional.implicit.implicit_gradient`):

    task_grad = (I + (H + cg_damping I) / proximal_strength)^{-1} grad(query_loss)(adapted)

with ``H`` the support-loss Hessian at ``adapted``, solved by ``cg_steps`` conjugate-gradient
iterations on Hessian-vector products. ``meta_loss`` returns the mean query loss as its value
and, as its gradient, ``mean_t task_grad`` (a surrogate ``sum_name <params[name], task_grad>``
plus the loss with the surrogate's value subtracted), so the Trainer treats iMAML like every
other method. The whole network adapts; the per-task loop is used (conjugate gradient stops on
data-dependent conditions, which ``vmap`` cannot trace).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from innerloop.algorithms.optimization.gradient_learner import AdaptedState, GradientLearner
from innerloop.functional import Params, implicit_gradient, inner_loop
from innerloop.functional.params import parameters_of, run
from innerloop.tasks.episodes import Episodes


class iMAML(GradientLearner):  # noqa: N801 — the method's own spelling
    """iMAML: proximal inner problem, meta-gradient by conjugate gradient (see module docstring)."""

    name = "imaml"
    default_adapt = "all"
    inner_config_keys = ("proximal_strength", "cg_steps", "cg_damping")

    def __init__(self, *args: Any, proximal_strength: float = 2.0, cg_steps: int = 5,
                 cg_damping: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.adapt_filter != "all":
            raise ValueError("iMAML's proximal inner problem adapts all parameters (adapt='all')")
        if self.vectorize:
            raise ValueError("iMAML runs tasks in a loop: conjugate gradient cannot run under vmap")
        if proximal_strength <= 0 or cg_steps < 1 or cg_damping < 0:
            raise ValueError(f"iMAML needs proximal_strength > 0, cg_steps >= 1 and cg_damping >= 0; "
                             f"got {proximal_strength}, {cg_steps}, {cg_damping}")
        self.proximal_strength = proximal_strength
        self.cg_steps = cg_steps
        self.cg_damping = cg_damping

    @property
    def gradient_flow(self) -> str:
        return (f"implicit (proximal strength {self.proximal_strength:g}, {self.cg_steps} "
                f"conjugate-gradient steps)")

    def _support_loss(self, support_x: Tensor, support_y: Tensor):
        def support_loss(params: Params) -> Tensor:
            return self.loss(run(self.network, params, support_x), support_y)
        return support_loss

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> AdaptedState:
        """The proximal inner problem, solved first order from the meta-parameters."""
        self._check_ways(ways)
        anchor = {name: p.detach() for name, p in self.network.named_parameters()}

        def proximal_loss(params: Params, step: int) -> Tensor:
            x, y = self._inner_batch(support_x, support_y, step)
            data = self.loss(run(self.network, params, x), y)
            distance = sum((params[n] - anchor[n]).pow(2).sum() for n in anchor)
            return data + 0.5 * self.proximal_strength * distance

        adapted = inner_loop(proximal_loss, dict(anchor), set(anchor), self.inner_optimizer(),
                             self.current_inner_steps, order="first")
        return AdaptedState({n: p.detach() for n, p in adapted.items()}, support_x)

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        params = parameters_of(self.network)
        grad_sum = {name: torch.zeros_like(p) for name, p in params.items()}
        losses, scores = [], []
        for t in range(episodes.num_tasks):
            episode = episodes[t]
            state = self.adapt(episode.support_x, episode.support_y, episodes.ways)
            adapted = {n: p.requires_grad_(True) for n, p in state.params.items()}
            with torch.enable_grad():
                outputs = self.predict(AdaptedState(adapted, episode.support_x), episode.query_x)
                query_loss = self.loss(outputs, episode.query_y)
                outer_grad = dict(zip(adapted, torch.autograd.grad(query_loss, list(adapted.values()))))
            task_grad = implicit_gradient(self._support_loss(episode.support_x, episode.support_y),
                                          adapted, outer_grad, self.proximal_strength, self.cg_steps,
                                          self.cg_damping)
            for name in grad_sum:
                grad_sum[name] += task_grad[name]
            losses.append(query_loss.detach())
            if self.task == "classification":
                scores.append((outputs.argmax(-1) == episode.query_y).float().mean())
            else:
                scores.append(query_loss.detach())
        mean_loss = torch.stack(losses).mean()
        direction = sum((params[n] * (grad_sum[n] / episodes.num_tasks)).sum() for n in params)
        surrogate = mean_loss + direction - direction.detach()  # value: query loss; gradient: mean task_grad
        return surrogate, {self.metric_name: float(torch.stack(scores).mean())}
