"""Bayesian MAML (Yoon, Kim, Dia, Kim, Bengio & Ahn, NeurIPS 2018) with the chaser loss.

The meta-parameters are ``num_particles`` (M) independently initialised particles of the adapted
parameters, ``start = {name: [M, ...]}``. The inner loop is Stein variational gradient descent
(:mod:`innerloop.functional.svgd`) on a task's log posterior, run by ``inner_loop`` with the
``SVGD(inner_lr)`` optimizer:

    chaser = SVGD_n(start; support)                          n = inner_steps, differentiated
    leader = SVGD_s(stop_gradient(chaser); support + query)  s = leader_steps, no gradient
    loss   = mean over tasks of sum_m ||chaser[m] - leader[m]||^2   (all adapted parameters)

Log posterior of particle ``m`` on data ``(x, y)`` of size N, per example (tempered by 1/N, so
that one particle is exactly MAML: one SVGD step = one SGD step at ``inner_lr`` on the mean
loss):

    log_posterior(theta_m) = -mean_i loss(network(theta_m, x_i), y_i)
                             - ||theta_m||^2 / (2 * prior_std^2 * N)   (only with prior_std)

with ``loss`` the cross-entropy (classification) or the squared error (regression: a Gaussian
likelihood of variance 1/2, i.e. MSE as the NLL up to a constant). Second order (``order``),
the meta-gradient goes through the chaser's scores and kernel; first order stops it at the
scores only (the kernel term stays differentiable; it is cheap).

The leader's log posterior is the same per-example mean over the ``S + Q`` examples of support
and query. The RBF kernel and its median-heuristic bandwidth (detached) are those of
:func:`~innerloop.functional.svgd.svgd_direction`.

Storage: the particles are ``M`` parameter dicts (``particles.<m>.<name>``, each tensor of its
network shape, so ``channels_last`` applies), stacked when used; the network itself keeps only
the parameters that do not adapt. Those (the body with ``adapt="head"``) are one copy shared by
all particles and meta-learned through the chaser's steps; the kernel and the prior see only the
particles. With ``adapt="head"`` the body's features are computed once per task, as in ANIL.

Paths: with ``vectorize`` the tasks and the particles both run under ``torch.func.vmap`` (the
sinusoid MLP: ~1.3x faster than a particle loop); without, both are Python loops (Conv-4 on CPU:
a particle loop is ~2x faster than vmap on 80 images). Tests check the two agree.

Predictive: classification averages the particles' softmax probabilities; regression is an
equal-weight mixture of ``N(network(theta_m, x), exp(noise_log_std)^2)`` over particles, one
shared meta-learned ``noise_log_std`` trained by the mixture's query NLL with the particle means
detached (so it only calibrates the spread; the chaser loss alone trains the particles).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.optimization.gradient_learner import GradientLearner, rate_key
from innerloop.algorithms.predictive import CategoricalPredictive, GaussianMixturePredictive, Predictive
from innerloop.functional import Params, inner_loop
from innerloop.functional.params import BODY_PREFIX, HEAD_PREFIX, parameters_of, run
from innerloop.functional.svgd import SVGD
from innerloop.nn.task_batch_norm import batch_norm_groups
from innerloop.tasks.episodes import Episodes

Forward = Callable[[Params, Tensor], Tensor]  # (all params, inputs) -> particle outputs [M, B, out]


@dataclass(frozen=True)
class ParticleState:
    """One task after SVGD: stacked adapted ``particles``, the ``shared`` rest, the support set."""

    particles: Params
    shared: Params
    support_x: Tensor


class BayesianMAML(GradientLearner):
    """BMAML: ``num_particles`` particles adapted by SVGD, meta-trained by the chaser loss."""

    name = "bmaml"
    default_adapt = "all"
    model_config_keys = ("num_particles",)
    inner_config_keys = ("leader_steps",)

    def __init__(self, *args: Any, num_particles: int = 5, leader_steps: int = 1,
                 prior_std: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        if leader_steps < 1:
            raise ValueError(f"leader_steps must be >= 1 (the leader runs ahead of the chaser), "
                             f"got {leader_steps}")
        if prior_std is not None and prior_std <= 0:
            raise ValueError(f"prior_std must be > 0 or None (no prior), got {prior_std}")
        if self.inner_optimizer_name != "sgd":
            raise ValueError(f"bmaml adapts by SVGD steps at inner_lr; set the inner optimizer to "
                             f"'sgd' (got '{self.inner_optimizer_name}')")
        self.num_particles = num_particles
        self.leader_steps = leader_steps
        self.prior_std = prior_std
        self.particle_names = sorted(self.adapted_names)
        self.particles = nn.ModuleList(self._initial_particles(num_particles))
        for name in self.particle_names:  # the particles replace the network's own copies
            module_name, _, attribute = name.rpartition(".")
            delattr(self.network.get_submodule(module_name), attribute)

    def _initial_particles(self, count: int) -> list[nn.ParameterDict]:
        """Particle 0 is the network's initialisation; the others are fresh draws of it."""
        particles = []
        for index in range(count):
            network = self.network if index == 0 else copy.deepcopy(self.network)
            if index > 0:
                for module in network.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
            values = parameters_of(network)
            particles.append(nn.ParameterDict({
                rate_key(name): nn.Parameter(values[name].detach().clone()) for name in self.particle_names}))
        return particles

    # -- parameters ---------------------------------------------------------------------------
    def start_particles(self) -> Params:
        """The meta-learned particles stacked: ``{name: [M, ...]}``."""
        return {name: torch.stack([particle[rate_key(name)] for particle in self.particles])
                for name in self.particle_names}

    def shared_parameters(self) -> Params:
        """The parameters that do not adapt (one copy for all particles)."""
        return parameters_of(self.network)

    # -- SVGD on a log posterior --------------------------------------------------------------
    def _forward(self, shared: Params, inputs: Tensor, order: str) -> tuple[Forward, Tensor]:
        """A particle forward pass and its input (the body's features when only the head adapts)."""
        if self._head_only():
            body = {n.removeprefix(BODY_PREFIX): t for n, t in shared.items() if n.startswith(BODY_PREFIX)}
            features = run(self.network.body, body, inputs)
            if order == "first" or not torch.is_grad_enabled():
                features = features.detach()

            def head_outputs(params: Params, x: Tensor) -> Tensor:
                head = {n.removeprefix(HEAD_PREFIX): params[n] for n in self.particle_names}
                return torch.func.vmap(lambda p: run(self.network.head, p, x))(head)

            return head_outputs, features

        def network_outputs(params: Params, x: Tensor) -> Tensor:
            rest = {n: t for n, t in params.items() if n not in self.adapted_names}
            particles = {n: params[n] for n in self.particle_names}
            if self.vectorize:
                return torch.func.vmap(lambda p: run(self.network, {**rest, **p}, x))(particles)
            return torch.stack([run(self.network, {**rest, **{n: t[m] for n, t in particles.items()}}, x)
                                for m in range(self.num_particles)])

        return network_outputs, inputs

    def negative_log_posterior(self, outputs: Tensor, targets: Tensor, particles: Params) -> Tensor:
        """``-sum_m log_posterior(theta_m)`` from particle outputs ``[M, N, out]`` (module docstring)."""
        count, size = outputs.shape[0], outputs.shape[1]
        if self.task == "classification":
            nll = F.cross_entropy(outputs.flatten(0, 1), targets.repeat(count), reduction="sum") / size
        else:
            nll = (outputs - targets).square().sum() / (size * outputs.shape[-1])
        if self.prior_std is not None:
            squared_norm = sum(particles[n].square().sum() for n in self.particle_names)
            nll = nll + squared_norm / (2 * self.prior_std ** 2 * size)
        return nll

    def svgd(self, particles: Params, shared: Params, inputs: Tensor, targets: Tensor, steps: int,
             order: str, minibatches: bool = True) -> Params:
        """``steps`` SVGD steps of the stacked ``particles`` on the log posterior of ``(inputs, targets)``."""
        forward, features = self._forward(shared, inputs, order)

        def loss(params: Params, step: int) -> Tensor:
            x, y = self._inner_batch(features, targets, step) if minibatches else (features, targets)
            return self.negative_log_posterior(forward(params, x), y, params)

        adapted = inner_loop(loss, {**shared, **particles}, set(particles), SVGD(self.inner_lr), steps,
                             order, checkpoint=self.checkpoint)
        return {n: adapted[n] for n in self.particle_names}

    def leader(self, chaser: Params, shared: Params, support_x: Tensor, support_y: Tensor,
               query_x: Tensor, query_y: Tensor) -> Params:
        """``leader_steps`` more SVGD steps from the detached chaser on support + query (no graph)."""
        with torch.no_grad():
            return self.svgd({n: t.detach() for n, t in chaser.items()},
                             {n: t.detach() for n, t in shared.items()},
                             torch.cat([support_x, query_x]), torch.cat([support_y, query_y]),
                             self.leader_steps, "first", minibatches=False)

    # -- adapt and predict --------------------------------------------------------------------
    def adaptation_cost(self) -> str:
        steps = self.eval_inner_steps
        return (f"{steps} SVGD step{'' if steps == 1 else 's'} of {self.num_particles} particles "
                f"(a forward+backward pass of the support set per particle and step)")

    @property
    def gradient_flow(self) -> str:
        return f"{self.order} order (chaser loss, leader {self.leader_steps} step(s) ahead)"

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> ParticleState:
        """``current_inner_steps`` SVGD steps from the meta-learned particles on the support set."""
        self._check_ways(ways)
        shared = self.shared_parameters()
        particles = self.svgd(self.start_particles(), shared, support_x, support_y,
                              self.current_inner_steps, self.order)
        return ParticleState(particles, shared, support_x)

    def particle_outputs(self, state: ParticleState, query_x: Tensor) -> Tensor:
        """Each particle's outputs on the queries, ``[M, Q, outputs]``."""
        def forward(x: Tensor) -> Tensor:
            network, inputs = self._forward(state.shared, x, self.order)
            return network({**state.shared, **state.particles}, inputs)

        if self.transductive or not self.has_batch_norm:
            return forward(query_x)
        num_queries, num_support = query_x.shape[0], state.support_x.shape[0]
        support = state.support_x.unsqueeze(0).expand(num_queries, *state.support_x.shape)
        batches = torch.cat([support, query_x.unsqueeze(1)], dim=1)  # each query with the support set
        with batch_norm_groups(num_queries):
            outputs = forward(batches.flatten(0, 1))
        return outputs.unflatten(1, (num_queries, num_support + 1))[:, :, -1]

    def predict(self, state: ParticleState, query_x: Tensor) -> Tensor:
        """The ensemble's ``[Q, outputs]``: log of the averaged probabilities, or the mean output."""
        outputs = self.particle_outputs(state, query_x)
        if self.task == "classification":
            return torch.log_softmax(outputs, -1).logsumexp(0) - math.log(outputs.shape[0])
        return outputs.mean(0)

    def _over_tasks(self, function: Callable[..., Any], *tensors: Tensor) -> Any:
        """``function`` of each task's tensors, stacked over tasks (a loop, or vmap with ``vectorize``)."""
        if self.vectorize:
            return torch.func.vmap(function)(*tensors)
        results = [function(*(t[index] for t in tensors)) for index in range(tensors[0].shape[0])]
        if isinstance(results[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*results))
        return torch.stack(results)

    def task_particle_outputs(self, episodes: Episodes) -> Tensor:
        """``[T, M, Q, outputs]``: every particle's query outputs after adapting to each task."""
        ways = episodes.ways
        return self._over_tasks(lambda sx, sy, qx: self.particle_outputs(self.adapt(sx, sy, ways), qx),
                                episodes.support_x, episodes.support_y, episodes.query_x)

    def predictive(self, episodes: Episodes) -> Predictive:
        """Averaged particle probabilities, or the Gaussian mixture over particles."""
        outputs = self.task_particle_outputs(episodes)
        if self.task == "classification":
            return CategoricalPredictive.average(outputs, dim=1)
        means = outputs.transpose(0, 1)  # [M, T, Q, 1]
        return GaussianMixturePredictive.from_samples(means, self.noise_log_std.exp().expand_as(means))

    # -- the chaser loss ----------------------------------------------------------------------
    def _task_chaser_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                          query_y: Tensor) -> tuple[Tensor, Tensor]:
        """One task's ``sum_m ||chaser[m] - leader[m]||^2`` and the chaser's query outputs ``[M, Q, out]``."""
        state = self.adapt(support_x, support_y, self.outputs)
        leader = self.leader(state.particles, state.shared, support_x, support_y, query_x, query_y)
        distance = sum((state.particles[n] - leader[n]).square().sum() for n in self.particle_names)
        with torch.no_grad():
            outputs = self.particle_outputs(
                ParticleState({n: t.detach() for n, t in state.particles.items()},
                              {n: t.detach() for n, t in state.shared.items()}, support_x), query_x)
        return distance, outputs

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """Mean chaser loss over tasks (+ the noise NLL for regression) and the ensemble's score."""
        self._check_ways(episodes.ways)
        distances, outputs = self._over_tasks(self._task_chaser_loss, episodes.support_x,
                                              episodes.support_y, episodes.query_x, episodes.query_y)
        chaser_loss = distances.mean()
        metrics = {"chaser_loss": float(chaser_loss.detach())}
        if self.task == "classification":
            probabilities = CategoricalPredictive.average(outputs, dim=1).probs
            true_class = probabilities.gather(-1, episodes.query_y.unsqueeze(-1)).squeeze(-1)
            metrics["accuracy"] = float((probabilities.argmax(-1) == episodes.query_y).double().mean())
            metrics["nll"] = float(-true_class.clamp_min(1e-300).log().mean())
            return chaser_loss, metrics
        means = outputs.squeeze(-1).transpose(1, 2)  # [T, Q, M], detached
        mixture = GaussianMixturePredictive(means, self.noise_log_std.exp().expand_as(means))
        noise_nll = -mixture.log_prob(episodes.query_y).mean().to(chaser_loss.dtype)
        metrics["mse"] = float((means.mean(-1) - episodes.query_y.squeeze(-1)).square().mean())
        metrics["nll"] = float(noise_nll.detach())
        return chaser_loss + noise_nll, metrics
