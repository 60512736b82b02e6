"""MAML++ (Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019).

MAML with five changes that make its training stable and its result better:

* **LSLR** — learned per-layer per-step inner rates: each adapted parameter tensor ``name`` has a
  rate vector ``rates[name]`` with one entry per inner step (initialised to ``inner_lr``),
  learned in the outer loop:

      adapted[name] = adapted[name] - rates[name][k] * grad(support_loss_k)(adapted)[name]

* **BNWB** — per-step batch-norm weights: the network after ``k`` updates normalizes with its
  ``k``-th (weight, bias) pair (:class:`~innerloop.nn.stepwise_batch_norm.StepwiseTaskBatchNorm`);
  these pairs are learned in the outer loop only (the inner loop does not change them).
* **MSL** — the multi-step loss: the outer objective of a task is
  ``sum_k step_weights[k] * query_loss(adapted after k + 1 updates)``. The weights start
  uniform, ``1 / N``; over the first ``multi_step_loss_steps`` outer steps the earlier steps'
  weights fall linearly to ``0.03 / N`` and the last one rises to the rest; after that only the
  final step's query loss counts.
* **DA** — derivative-order annealing: first order for the first ``first_order_steps`` outer
  steps, then the configured order (second).
* **CA** — cosine annealing of the outer rate: the Trainer's ``optim.schedule: cosine`` with
  ``optim.min_lr`` (the recipe sets both).

Batch-norm pairs are indexed by the number of updates the weights have had: the support pass
before update ``k + 1`` and the query pass after ``k`` updates both use pair ``k``, so there are
``inner_steps + 1`` pairs (the reference code shares pair ``k`` between the support pass before
update ``k + 1`` and the query pass after it, ``inner_steps`` pairs); here one set of weights is
always normalized the same way. Statistics are those of each task's current batch at every step
(transductive, as in MAML); the paper's per-step running statistics are not kept: with per-task
batch statistics they would never be read. Evaluation with more inner steps than training
reuses the last learned rate and the last pair (trained on query passes only). With
``checkpoint=True`` the inner steps are recomputed in the backward pass, but while the
multi-step loss is on, each step's query pass is stored, so memory still grows with the steps.

The Trainer calls :meth:`set_training_step` before each outer step; code that drives
``meta_loss`` itself must do the same, or the learner stays at the start of both schedules
(multi-step loss, first order).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from innerloop.algorithms.optimization.gradient_learner import AdaptedState, GradientLearner, rate_key
from innerloop.functional import InnerOptimizer, Params, StepwiseSGD, inner_loop
from innerloop.functional.inner_loop import StepObserver
from innerloop.functional.params import parameters_of, run
from innerloop.nn.stepwise_batch_norm import batch_norm_step, make_batch_norm_stepwise
from innerloop.tasks.episodes import Episodes

FINAL_WEIGHT_FLOOR = 0.03  # earlier steps' multi-step-loss weights never fall below this / N


class MAMLPlusPlus(GradientLearner):
    """MAML++: MAML with LSLR, per-step batch-norm weights, MSL, DA (see module docstring)."""

    name = "mamlpp"
    default_adapt = "all"
    inner_config_keys = ("multi_step_loss_steps", "first_order_steps")

    def __init__(self, *args: Any, multi_step_loss_steps: int = 5000, first_order_steps: int = 25000,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.inner_optimizer_name != "sgd":
            raise ValueError("MAML++ learns per-layer per-step SGD rates: use the sgd inner optimizer")
        if self.adapt_filter != "all":
            raise ValueError("MAML++ adapts every weight but its batch-norm pairs (adapt='all')")
        if self.inner_steps < 1:
            raise ValueError("MAML++ needs inner_steps >= 1 (its outer loss is over the inner steps)")
        if multi_step_loss_steps < 0 or first_order_steps < 0:
            raise ValueError(f"multi_step_loss_steps and first_order_steps must be >= 0, got "
                             f"{multi_step_loss_steps} and {first_order_steps}")
        replaced = make_batch_norm_stepwise(self.network, self.inner_steps + 1)
        batch_norm_names = {f"{module}.{kind}" for module in replaced for kind in ("weight", "bias")}
        self.adapted_names = self.adapted_names - batch_norm_names
        self.rates = nn.ParameterDict({
            rate_key(name): nn.Parameter(torch.full((self.inner_steps,), float(self.inner_lr)))
            for name in sorted(self.adapted_names)
        })
        self.multi_step_loss_steps = multi_step_loss_steps
        self.first_order_steps = first_order_steps
        self.final_order = self.order
        self.set_training_step(0)

    # -- schedules over training ---------------------------------------------------------------
    def set_training_step(self, step: int) -> None:
        """Follow the schedules to outer step ``step`` (0-based): the derivative order and the
        multi-step loss weights."""
        self.training_step = step
        self.order = "first" if step < self.first_order_steps else self.final_order

    def step_loss_weights(self) -> list[float]:
        """Weights of the query losses after inner steps ``1 .. inner_steps`` at the current step."""
        steps = self.inner_steps
        if self.training_step >= self.multi_step_loss_steps:
            return [0.0] * (steps - 1) + [1.0]
        progress = self.training_step / self.multi_step_loss_steps
        floor = FINAL_WEIGHT_FLOOR / steps
        earlier = max((1.0 - progress) / steps, floor)
        final = min((1.0 + (steps - 1) * progress) / steps, 1.0 - (steps - 1) * floor)
        return [earlier] * (steps - 1) + [final]

    @property
    def gradient_flow(self) -> str:
        return (f"{self.final_order} order after {self.first_order_steps} first-order outer steps; "
                f"multi-step loss for {self.multi_step_loss_steps} outer steps")

    # -- the inner loop -------------------------------------------------------------------------
    def inner_optimizer(self) -> InnerOptimizer:
        """LSLR; more evaluation steps than training steps reuse the last learned rate."""
        steps = max(self.current_inner_steps, 1)
        rates = {}
        for name in self.adapted_names:
            learned = self.rates[rate_key(name)]
            extra = steps - learned.shape[0]
            rates[name] = torch.cat([learned, learned[-1:].expand(extra)]) if extra > 0 else learned
        return StepwiseSGD(rates)

    def _adapt_params(self, support_x: Tensor, support_y: Tensor,
                      on_step: StepObserver | None = None) -> Params:
        def support_loss(params: Params, step: int) -> Tensor:
            x, y = self._inner_batch(support_x, support_y, step)
            with batch_norm_step(step):  # inside the loss, so a checkpointed recomputation agrees
                return self.loss(run(self.network, params, x), y)

        return inner_loop(support_loss, parameters_of(self.network), self.adapted_names,
                          self.inner_optimizer(), self.current_inner_steps, self.order,
                          checkpoint=self.checkpoint, on_step=on_step)

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> AdaptedState:
        self._check_ways(ways)
        return AdaptedState(self._adapt_params(support_x, support_y), support_x)

    def _predict_after(self, params: Params, support_x: Tensor, query_x: Tensor, updates: int) -> Tensor:
        with batch_norm_step(updates):
            return super().predict(AdaptedState(params, support_x), query_x)

    def predict(self, state: AdaptedState, query_x: Tensor) -> Tensor:
        return self._predict_after(state.params, state.support_x, query_x, self.current_inner_steps)

    # -- the outer objective ----------------------------------------------------------------------
    def _task_objective(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                        query_y: Tensor, weights: list[float]) -> tuple[Tensor, Tensor]:
        """The weighted multi-step query loss of one task and its final query outputs."""
        terms: list[Tensor] = []
        final: list[Tensor] = []

        def observe(updates: int, params: Params) -> None:
            weight = weights[updates - 1]
            if weight == 0 and updates < len(weights):
                return
            outputs = self._predict_after(params, support_x, query_x, updates)
            terms.append(weight * self.loss(outputs, query_y))
            if updates == len(weights):
                final.append(outputs)

        self._adapt_params(support_x, support_y, on_step=observe)
        return torch.stack(terms).sum(), final[0]

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """Mean over tasks of the weighted multi-step query loss; accuracy (or MSE) after the last step."""
        self._check_ways(episodes.ways)
        weights = self.step_loss_weights() if self.training else [0.0] * (self.inner_steps - 1) + [1.0]
        if self.current_inner_steps != len(weights):
            weights = [0.0] * (self.current_inner_steps - 1) + [1.0]

        def one_task(support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor):
            return self._task_objective(support_x, support_y, query_x, query_y, weights)

        tasks = (episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y)
        if self.vectorize:
            losses, outputs = torch.func.vmap(one_task)(*tasks)
        else:
            per_task = [one_task(*(part[t] for part in tasks)) for t in range(episodes.num_tasks)]
            losses = torch.stack([loss for loss, _ in per_task])
            outputs = torch.stack([out for _, out in per_task])
        loss = losses.mean()
        if self.task == "classification":
            accuracy = (outputs.argmax(-1) == episodes.query_y).float().mean()
            return loss, {"accuracy": float(accuracy)}
        noise_loss, metrics = self._regression_loss(outputs, episodes)  # fits the noise std
        mse = (outputs - episodes.query_y).pow(2).mean()
        return loss + noise_loss - mse.detach(), metrics
