"""PLATIPUS (Finn, Xu & Levine, NeurIPS 2018, "Probabilistic Model-Agnostic Meta-Learning").

The meta-parameters are a Gaussian prior over the initial weights of the adapted parameters,
``N(mean, exp(prior_log_std)^2)`` per entry (``mean`` is the network's own parameters), two
learned scalar step sizes ``prior_step`` (the paper's gamma_p) and ``posterior_step`` (gamma_q),
and the learned per-entry std ``exp(posterior_log_std)`` of the variational posterior (sqrt v_q).
Training, for a task with support ``(support_x, support_y)`` and queries ``(query_x, query_y)``
(Algorithm 1):

    posterior_mean = mean - posterior_step * grad(query_loss)(mean)        (uses the queries)
    prior_mean     = mean - prior_step * grad(support_loss)(mean)
    theta          = posterior_mean + exp(posterior_log_std) * noise,   noise ~ N(0, I)
    adapted        = theta, then inner_steps times: adapted - inner_lr * grad(support_loss)(adapted)
    loss           = query_loss(adapted)
                     + kl_weight * KL(N(posterior_mean, exp(posterior_log_std)^2)
                                      || N(prior_mean, exp(prior_log_std)^2))

At test time (Algorithm 2) ``theta = prior_mean + exp(prior_log_std) * noise``, adapted on the
support set as above, for ``num_samples`` draws; the predictive is the average of the sampled
classifiers' probabilities, or for regression an equal-weight mixture of ``N(output_m,
exp(noise_log_std)^2)`` over the samples (``noise_log_std`` is fitted by the mixture's NLL of the
queries with the sampled outputs detached, as GradientLearner does for MAML).

Choices the paper leaves open, stated here: both stds start at ``initial_std`` (0.01) and both
steps at ``inner_lr``; training draws ``train_samples`` (1, as in Algorithm 1) samples per task;
the KL is summed over the adapted entries and averaged over tasks. That sum grows with the number
of entries, and its mean term ``(gap / std)^2`` with ``(inner_lr / initial_std)^2`` (the gap of
the two means is proportional to the steps); the query loss does neither, so the default
``kl_weight = 20 * (initial_std / inner_lr)^2 / adapted_entries`` undoes both. Measured (short
runs, one seed): 1.1e-2 for the sinusoid MLP(40, 40) at inner_lr 0.01, near the best of 0..1e-1
there; at Omniglot's 0.4, 3.8e-5 head-only (92.2% where 1e-4 gave 94.4%, 1e-3 84.8%) and 1e-7 for
the whole Conv-4, where 1e-4 already stalls training. Only the parameters the ``adapt`` filter
selects are random, the others stay at their meta-learned values (``adapt="head"``: a fast
head-only PLATIPUS). With ``order="first"`` the two mean steps and the inner loop treat their
gradients as constants (the steps still learn: ``d prior_mean / d prior_step`` is the gradient).
Tasks run in a loop or, with ``vectorize``, under ``torch.func.vmap`` (noise is drawn before, so
the vmapped function is deterministic; 5x faster on sinusoids).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.optimization.gradient_learner import AdaptedState, GradientLearner, rate_key
from innerloop.algorithms.predictive import CategoricalPredictive, GaussianMixturePredictive, Predictive
from innerloop.functional import Params, inner_loop, parameters_of, run
from innerloop.functional.gaussians import diagonal_gaussian_kl
from innerloop.functional.params import HEAD_PREFIX
from innerloop.tasks.episodes import Episodes

DEFAULT_NUM_SAMPLES = 10
KL_WEIGHT_PER_ENTRY = 20.0  # the default kl_weight times adapted entries where inner_lr == initial_std
DEFAULT_INITIAL_STD = 0.01
OutputFunction = Callable[[Params], Tensor]  # adapted parameters -> network outputs
TaskFunction = Callable[[Tensor, Tensor, Tensor, Tensor, Params], tuple[Tensor, ...]]


def gaussian_kl(mean_q: Tensor, log_std_q: Tensor, mean_p: Tensor, log_std_p: Tensor) -> Tensor:
    """``KL(N(mean_q, exp(log_std_q)^2) || N(mean_p, exp(log_std_p)^2))`` of diagonal Gaussians,
    summed over all entries."""
    return diagonal_gaussian_kl(mean_q, log_std_q, mean_p, log_std_p).sum()


@dataclass(frozen=True)
class SampledState:
    """The result of ``adapt`` for one task: the adapted parameters of every sampled ``theta``."""

    samples: tuple[Params, ...]  # adapted parameters only, by name
    support_x: Tensor


class PLATIPUS(GradientLearner):
    """PLATIPUS: a learned Gaussian prior over MAML's initialization, sampled then adapted.

    Args (besides GradientLearner's):
        num_samples: sampled initializations per task at test time.
        train_samples: sampled initializations per task while meta-training.
        kl_weight: weight of the summed KL divergence in the meta-loss (None: the default of
            the module docstring, ``20 * (initial_std / inner_lr)^2 / adapted_entries``).
        initial_std: the initial prior and posterior std of every adapted entry.
    """

    name = "platipus"
    default_adapt = "all"
    backbone_batch_norm = "task"
    model_config_keys = ("num_samples", "kl_weight")

    def __init__(self, *args: Any, num_samples: int = DEFAULT_NUM_SAMPLES, train_samples: int = 1,
                 kl_weight: float | None = None, initial_std: float = DEFAULT_INITIAL_STD,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if num_samples < 1 or train_samples < 1:
            raise ValueError(f"PLATIPUS needs num_samples >= 1 and train_samples >= 1, got "
                             f"{num_samples} and {train_samples}")
        if self.inner_batch_size is not None:
            raise ValueError("PLATIPUS adapts on the whole support set: leave inner.batch_size unset")
        self.adapted_order = [n for n, _ in self.network.named_parameters() if n in self.adapted_names]
        shapes = dict(self.network.named_parameters())
        if kl_weight is None:
            if self.inner_lr <= 0:
                raise ValueError(f"the default kl_weight scales with 1 / inner_lr^2; with inner_lr "
                                 f"{self.inner_lr} pass kl_weight explicitly")
            entries = sum(shapes[n].numel() for n in self.adapted_order)
            kl_weight = KL_WEIGHT_PER_ENTRY * (initial_std / self.inner_lr) ** 2 / entries
        if kl_weight < 0 or initial_std <= 0:
            raise ValueError(f"kl_weight must be >= 0 and initial_std > 0, got {kl_weight} and {initial_std}")
        self.num_samples, self.train_samples, self.kl_weight = num_samples, train_samples, kl_weight

        def log_stds() -> nn.ParameterDict:
            log_std = math.log(initial_std)
            return nn.ParameterDict({rate_key(n): nn.Parameter(torch.full_like(shapes[n], log_std))
                                     for n in self.adapted_order})

        self.prior_log_std, self.posterior_log_std = log_stds(), log_stds()
        self.prior_step = nn.Parameter(torch.tensor(float(self.inner_lr)))
        self.posterior_step = nn.Parameter(torch.tensor(float(self.inner_lr)))

    def adaptation_cost(self) -> str:
        return f"one gradient for the prior mean, then {self.num_samples} samples, each: {super().adaptation_cost()}"

    # -- noise and Gaussians ------------------------------------------------------------------
    def sample_noise(self, num_tasks: int, num_samples: int,
                     generator: torch.Generator | None = None) -> Params:
        """Standard-normal draws ``[num_tasks, num_samples, *shape]`` for every adapted parameter."""
        shapes = parameters_of(self.network)
        return {n: torch.randn((num_tasks, num_samples, *shapes[n].shape), generator=generator,
                               dtype=shapes[n].dtype, device=shapes[n].device) for n in self.adapted_order}

    def _sample(self, mean: Params, log_std: nn.ParameterDict, noise: Params) -> Params:
        return {n: mean[n] + log_std[rate_key(n)].exp() * noise[n] for n in self.adapted_order}

    def kl_divergence(self, posterior_mean: Params, prior_mean: Params) -> Tensor:
        """The KL of the task's posterior from its prior, summed over the adapted entries."""
        return sum(gaussian_kl(posterior_mean[n], self.posterior_log_std[rate_key(n)],
                               prior_mean[n], self.prior_log_std[rate_key(n)]) for n in self.adapted_order)

    # -- the network as a function of the adapted parameters -----------------------------------
    def _first_order(self) -> bool:
        return self.order == "first" or not torch.is_grad_enabled()

    def _support_function(self, support_x: Tensor) -> OutputFunction:
        """Support outputs; used only inside gradients, so constant inputs under first order."""
        if self._head_only():
            features = self.network.body(support_x)
            return self._head_on(features.detach() if self._first_order() else features)
        frozen = {n: t for n, t in parameters_of(self.network).items() if n not in self.adapted_names}
        if self._first_order():
            frozen = {n: t.detach() for n, t in frozen.items()}
        return lambda adapted: run(self.network, {**frozen, **adapted}, support_x)

    def _query_function(self, support_x: Tensor, query_x: Tensor) -> OutputFunction:
        """Query outputs (transductive or each query with the support set, as GradientLearner)."""
        if self._head_only():
            if self.transductive or not self.has_batch_norm:
                return self._head_on(self.network.body(query_x))
            return self._head_on(self._grouped_predict(self.network.body, support_x, query_x))
        frozen = {n: t for n, t in parameters_of(self.network).items() if n not in self.adapted_names}
        return lambda adapted: GradientLearner.predict(self, AdaptedState({**frozen, **adapted}, support_x),
                                                       query_x)

    def _head_on(self, features: Tensor) -> OutputFunction:
        def head(adapted: Params) -> Tensor:
            return run(self.network.head, {n.removeprefix(HEAD_PREFIX): t for n, t in adapted.items()}, features)

        return head

    def _mean_step(self, outputs: OutputFunction, targets: Tensor, step: Tensor) -> Params:
        """``mean - step * grad(loss)(mean)`` over the adapted parameters."""
        mean = {n: p for n, p in parameters_of(self.network).items() if n in self.adapted_names}
        loss = lambda p: self.loss(outputs(p), targets)  # noqa: E731
        if self._first_order():
            grads = torch.func.grad(loss)({n: t.detach() for n, t in mean.items()})
            grads = {n: g.detach() for n, g in grads.items()}
        else:
            grads = torch.func.grad(loss)(mean)
        return {n: mean[n] - step * grads[n] for n in self.adapted_order}

    def _sample_and_adapt(self, support: OutputFunction, support_y: Tensor, mean: Params,
                          log_std: nn.ParameterDict, noise: Params) -> tuple[Params, ...]:
        """For each draw ``m``: ``theta = mean + exp(log_std) * noise[m]``, then the inner loop."""
        adapted = []
        for m in range(next(iter(noise.values())).shape[0]):
            theta = self._sample(mean, log_std, {n: v[m] for n, v in noise.items()})
            adapted.append(inner_loop(lambda p, step: self.loss(support(p), support_y), theta, set(theta),
                                      self.inner_optimizer(), self.current_inner_steps, self.order,
                                      checkpoint=self.checkpoint))
        return tuple(adapted)

    # -- over the tasks of a batch ------------------------------------------------------------
    def _over_tasks(self, function: TaskFunction, episodes: Episodes, noise: Params) -> tuple[Tensor, ...]:
        """``function(support_x, support_y, query_x, query_y, noise)`` of every task, stacked along
        dimension 0: a per-task loop, or ``torch.func.vmap`` with ``vectorize`` (noise is drawn
        before, so the vmapped function is deterministic)."""
        inputs = (episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y)
        if self.vectorize:
            return torch.func.vmap(function)(*inputs, noise)
        results = [function(*(tensor[t] for tensor in inputs), {n: v[t] for n, v in noise.items()})
                   for t in range(episodes.num_tasks)]
        return tuple(torch.stack(parts) for parts in zip(*results))

    # -- test time (Algorithm 2) ----------------------------------------------------------------
    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int,
              noise: Params | None = None) -> SampledState:
        """Sample initializations from the prior given the support set and adapt each; ``noise``
        (``[M, *shape]`` per adapted parameter) fixes the draws, else ``num_samples`` are drawn."""
        self._check_ways(ways)
        if noise is None:
            noise = {n: v[0] for n, v in self.sample_noise(1, self.num_samples).items()}
        support = self._support_function(support_x)
        prior_mean = self._mean_step(support, support_y, self.prior_step)
        return SampledState(self._sample_and_adapt(support, support_y, prior_mean, self.prior_log_std, noise),
                            support_x)

    def sampled_outputs(self, state: SampledState, query_x: Tensor) -> Tensor:
        """Outputs ``[M, Q, outputs]`` of every sampled adapted network on the queries."""
        query = self._query_function(state.support_x, query_x)
        return torch.stack([query(sample) for sample in state.samples])

    def predict(self, state: SampledState, query_x: Tensor) -> Tensor:
        """Log of the sample-averaged probabilities, or the sample-averaged regression output."""
        return self._combine(self.sampled_outputs(state, query_x))

    def _combine(self, outputs: Tensor) -> Tensor:
        if self.task == "regression":
            return outputs.mean(0)
        return torch.logsumexp(F.log_softmax(outputs, dim=-1), dim=0) - math.log(outputs.shape[0])

    def _task_samples(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                      noise: Params) -> tuple[Tensor]:
        # the batch's ways were checked by the caller; a regression head has one output
        return (self.sampled_outputs(self.adapt(support_x, support_y, self.outputs, noise), query_x),)

    def _all_sampled_outputs(self, episodes: Episodes, noise: Params | None) -> Tensor:
        """Outputs ``[M, T, Q, outputs]`` of every task's samples."""
        self._check_ways(episodes.ways)
        noise = self.sample_noise(episodes.num_tasks, self.num_samples) if noise is None else noise
        (outputs,) = self._over_tasks(self._task_samples, episodes, noise)
        return outputs.transpose(0, 1)

    def query_logits(self, episodes: Episodes) -> Tensor:
        return self._combine(self._all_sampled_outputs(episodes, None))

    def predictive(self, episodes: Episodes, noise: Params | None = None) -> Predictive:
        """Sample-averaged class probabilities, or a Gaussian mixture over the samples; ``noise``
        (``[T, M, *shape]`` per adapted parameter) fixes the draws."""
        return self._predictive_of(self._all_sampled_outputs(episodes, noise))

    def _predictive_of(self, outputs: Tensor) -> Predictive:
        if self.task == "classification":
            return CategoricalPredictive.average(outputs, dim=0)
        return GaussianMixturePredictive.from_samples(outputs, self.noise_log_std.exp().expand_as(outputs))

    def episode_metric(self, episodes: Episodes) -> Tensor:
        """Per-task accuracy of the averaged probabilities, or MSE of the mixture's mean."""
        return self._metric_of(self.predictive(episodes), episodes)

    def _metric_of(self, predictive: Predictive, episodes: Episodes) -> Tensor:
        if isinstance(predictive, GaussianMixturePredictive):
            return (predictive.mean - episodes.query_y.squeeze(-1).to(torch.float64)).square().mean(1)
        accuracy = (predictive.probs.argmax(-1) == episodes.query_y).to(torch.float64).mean(1)
        finite = torch.isfinite(predictive.probs).flatten(1).all(1)
        return torch.where(finite, accuracy, torch.full_like(accuracy, float("nan")))

    # -- training (Algorithm 1) -----------------------------------------------------------------
    def _task_objective(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                        noise: Params) -> tuple[Tensor, Tensor, Tensor]:
        """One task's sampled query loss, KL and sampled outputs ``[M, Q, outputs]``."""
        support = self._support_function(support_x)
        query = self._query_function(support_x, query_x)
        prior_mean = self._mean_step(support, support_y, self.prior_step)
        posterior_mean = self._mean_step(query, query_y, self.posterior_step)
        samples = self._sample_and_adapt(support, support_y, posterior_mean, self.posterior_log_std, noise)
        outputs = torch.stack([query(sample) for sample in samples])
        query_loss = torch.stack([self.loss(sample, query_y) for sample in outputs]).mean()
        return query_loss, self.kl_divergence(posterior_mean, prior_mean), outputs

    def meta_loss(self, episodes: Episodes, noise: Params | None = None) -> tuple[Tensor, dict[str, float]]:
        """Mean over tasks of the sampled query loss plus ``kl_weight`` times the KL; ``noise``
        (``[T, train_samples, *shape]`` per adapted parameter) fixes the draws, else they come
        from torch's global generator."""
        self._check_ways(episodes.ways)
        noise = self.sample_noise(episodes.num_tasks, self.train_samples) if noise is None else noise
        query_losses, kls, outputs = self._over_tasks(self._task_objective, episodes, noise)
        query_loss, kl = query_losses.mean(), kls.mean()
        loss = query_loss + self.kl_weight * kl
        metrics = {"query_loss": float(query_loss.detach()), "kl": float(kl.detach())}
        predictive = self._predictive_of(outputs.detach().transpose(0, 1))
        if self.task == "regression":  # fit the noise std to the mixture the samples make
            noise_nll = -predictive.log_prob(episodes.query_y).mean().to(loss.dtype)
            loss = loss + noise_nll
            metrics["nll"] = float(noise_nll.detach())
        metrics[self.metric_name] = float(self._metric_of(predictive, episodes).mean())
        return loss, metrics
