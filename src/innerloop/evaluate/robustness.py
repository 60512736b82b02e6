"""Robustness of every method to corrupted support sets, scored on the clean fixed episodes.

Each condition perturbs the *support set* of the same fixed seeded episodes that give the clean
score (:class:`~innerloop.tasks.fixed.FixedEpisodes`), identically for every method, and is scored
like them (per-episode query accuracy, mean ± 95% CI, :func:`~innerloop.evaluate.protocol.evaluate_episodes`).
Queries are never touched. ``S`` is the support size, ``round`` rounds halves up.

* :class:`SupportLabelNoise` ``(rate)`` — symmetric label noise. In every episode exactly
  ``num_noisy = round(rate * S)`` support labels are replaced: the positions are the first
  ``num_noisy`` of a uniform permutation, and each new label is uniform over the other
  ``ways - 1`` labels, ``noisy = (label + offset) mod ways`` with ``offset ~ U{1..ways-1}``.
  Draws that would leave a class with no support example at all are redrawn, so the corruption is
  uniform *given* that every class keeps an example (a class mean, an SVM class, a head unit
  with data). With one example per class that means the noisy labels permute the chosen
  examples' classes with no fixed point (drawn as a uniform derangement); one noisy label among
  one-shot classes is impossible and refused. The draws of episode ``i`` come from
  ``derived_seed(seed, "label_noise", i)``: the same for every method and batch size, and at a
  higher rate the labels a lower rate corrupts are corrupted the same way (when no redraw was
  needed, and not with one example per class, where each rate draws its own derangement).
* :class:`SupportImbalance` ``(minority_fraction, minority_shots)`` — class imbalance. In every
  episode ``num_minority = round(minority_fraction * ways)`` classes (uniform per episode, from
  ``derived_seed(seed, "imbalance", i)``) keep only their first ``minority_shots`` support
  examples; the other classes keep all ``shots``. The support set shrinks to
  ``ways * shots - num_minority * (shots - minority_shots)`` examples, still ordered by label;
  ``Episodes.shots`` stays the nominal ``shots``.
* :class:`AdversarialSupport` ``(epsilon, steps, step_size)`` — projected gradient ascent (PGD,
  Madry, Makelov, Schmidt, Tsipras & Vladu, ICLR 2018) on the support inputs against the adapted
  learner's query loss, in an L∞ ball:

      adversarial_0 = support_x                     (random_start: + U[-epsilon, epsilon])
      adversarial_{k+1} = project(adversarial_k + step_size * sign(grad_support_x query_nll))
      project(x) = clamp(support_x + clamp(x - support_x, -epsilon, epsilon), *valid_range)
      query_nll = mean_q -log p(query_y[q] | query_x[q], adapt(adversarial_k, support_y))

  ``p`` is the learner's predictive (the softmax of its logits for most methods). The gradient
  goes through the method's adaptation: the prototypes of ProtoNet, the unrolled inner loop of
  MAML and its relatives. Gradient-based methods adapt *second order* while the attack computes
  its gradients, whatever order they were trained with (first order treats the adapted weights as
  constants of the support set); the attack is then scored by the method's usual evaluation. The
  default step size is ``2.5 * epsilon / steps`` (Madry et al.'s rule), the default start the
  clean images (deterministic). ``valid_range`` is the data's: images are the sampler's ``uint8 / 255``,
  so ``[0, 1]``; feature-vector stores have none (:func:`input_range`). A method whose
  adaptation carries no gradient to the support inputs is refused with an error naming it:
  iMAML (its inner problem is solved on detached weights) and LEO (detached at evaluation) by
  name, any other (a learned optimizer fed detached gradients, metalstm) when the query loss has
  no gradient with respect to the support inputs, or an exactly zero one for a whole batch of
  tasks. Gradient-based methods are attacked one task at a time (a second-order inner loop
  keeps a large graph per task); the others a batch at a time. Tasks are independent in
  evaluation mode, so this changes no number.

Learners see these support sets through the ordinary contract (``support_y`` with any labels in
any order, any support size): per-class quantities are one-hot sums of ``support_y``
(:func:`~innerloop.algorithms.metric.protonet.class_means`, and
:func:`~innerloop.algorithms.optimization.gradient_learner.round_robin_by_label` for inner
minibatches), so nothing assumes ``shots`` examples per label.

:func:`robustness_run` scores a trained run directory under every condition and writes
``robustness-{split}-{ways}w{shots}s{queries}q-{checkpoint}-{episodes}ep-seed{seed}.json`` and
``.md`` (:class:`RobustnessReport`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.predictive import CategoricalPredictive
from innerloop.errors import InnerloopError, TaskError
from innerloop.evaluate.protocol import EpisodeResult, evaluate_episodes
from innerloop.evaluate.report import today
from innerloop.tasks.episodes import Episodes, occurrence_index
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.tasks.sampler import EpisodeSampler

if TYPE_CHECKING:
    from innerloop.build import UserBackbone

MAX_REDRAWS = 1000  # label noise: draws per episode before a rate is declared impossible
# Methods whose adaptation detaches the support set by design, and why (see the module docstring).
DETACHED_ADAPTATION = {
    "imaml": "iMAML solves its proximal inner problem on detached weights (its implicit gradient is "
             "taken with respect to the meta-parameters only), so the adapted weights carry no "
             "gradient to the support images",
    "leo": "LEO's evaluation-time latent and fine-tuning steps run first order on detached support "
           "embeddings and its adapted classifier weights are detached, so they carry no gradient to "
           "the support images",
}


def derived_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one use (``parts``: condition, episode number) of the evaluation seed."""
    text = ":".join(["innerloop-robustness", str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def round_half_up(value: float) -> int:
    """``value`` rounded, halves up; ``value`` is a rate times a count, so it is first rounded to
    9 decimals (0.58 * 25 is 14.499999999999998 in floating point, and means 14.5)."""
    return math.floor(round(value, 9) + 0.5)


# -- label noise -----------------------------------------------------------------------------
def noisy_support_labels(support_y: Tensor, ways: int, rate: float, generator: torch.Generator) -> Tensor:
    """One episode's ``support_y [S]`` with exactly ``round(rate * S)`` labels replaced by another
    class, uniformly, keeping every class that has an example (see the module docstring)."""
    if ways < 2:
        raise TaskError(f"label noise needs at least 2 ways (a different class to switch to), got {ways}")
    size = support_y.numel()
    num_noisy = round_half_up(rate * size)
    labels = support_y.cpu()
    if num_noisy == 0:
        return support_y.clone()
    counts = torch.bincount(labels, minlength=ways)
    present = counts > 0
    if bool((counts == 1).all()):  # one example per class: the noisy labels permute the classes
        if num_noisy == 1:
            raise TaskError(f"{rate:g} label noise corrupts 1 of {size} support labels, and with one "
                            f"example per class that always leaves a class without examples; use a "
                            f"rate of 0 or one that corrupts at least 2 labels (>= {1.5 / size:.2f}), "
                            f"or more shots")
        positions = torch.randperm(size, generator=generator)[:num_noisy]
        while True:  # a uniform derangement of the chosen labels (accepted with probability ~1/e)
            shuffle = torch.randperm(num_noisy, generator=generator)
            if not bool((shuffle == torch.arange(num_noisy)).any()):
                break
        noisy = labels.clone()
        noisy[positions] = labels[positions][shuffle]
        return noisy.to(support_y.device)
    for _ in range(MAX_REDRAWS):
        positions = torch.randperm(size, generator=generator)[:num_noisy]
        offsets = torch.randint(1, ways, (size,), generator=generator)[:num_noisy]
        noisy = labels.clone()
        noisy[positions] = (labels[positions] + offsets) % ways
        if bool((torch.bincount(noisy, minlength=ways)[present] > 0).all()):
            return noisy.to(support_y.device)
    raise TaskError(f"no corruption of {num_noisy} of {size} support labels in {MAX_REDRAWS} draws kept "
                    f"an example of every class; lower the label-noise rate {rate:g} or use more shots")


@dataclass(frozen=True)
class SupportLabelNoise:
    """Symmetric support label noise at ``rate`` (see the module docstring)."""

    rate: float
    condition: ClassVar[str] = "label_noise"

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise InnerloopError(f"label noise rate must be in (0, 1], got {self.rate}")

    def label(self, ways: int, shots: int) -> str:
        return f"{100 * self.rate:g}% support label noise"

    @property
    def settings(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def perturb(self, learner: MetaLearner, episodes: Episodes, first_episode: int, seed: int) -> Episodes:
        labels = [noisy_support_labels(episodes.support_y[t], episodes.ways, self.rate,
                                       torch.Generator().manual_seed(derived_seed(seed, self.condition, first_episode + t)))
                  for t in range(episodes.num_tasks)]
        return dataclasses.replace(episodes, support_y=torch.stack(labels))


# -- class imbalance -------------------------------------------------------------------------
def imbalanced_positions(support_y: Tensor, ways: int, num_minority: int, minority_shots: int,
                         generator: torch.Generator) -> Tensor:
    """Positions (ascending) of the support examples one imbalanced episode keeps:
    ``num_minority`` classes drawn uniformly keep their first ``minority_shots`` examples, the
    others all of theirs."""
    minority = torch.randperm(ways, generator=generator)[:num_minority].to(support_y.device)
    allowed = torch.full((ways,), support_y.numel(), dtype=torch.int64, device=support_y.device)
    allowed[minority] = minority_shots
    keep = occurrence_index(support_y, ways) < allowed[support_y]
    return keep.nonzero().squeeze(-1)


@dataclass(frozen=True)
class SupportImbalance:
    """A ``minority_fraction`` of the ways keeps only ``minority_shots`` support examples."""

    minority_fraction: float
    minority_shots: int = 1
    condition: ClassVar[str] = "imbalance"

    def __post_init__(self) -> None:
        if not 0 < self.minority_fraction < 1:
            raise InnerloopError(f"imbalance: the minority fraction of the ways must be in (0, 1), "
                                 f"got {self.minority_fraction}")
        if self.minority_shots < 1:
            raise InnerloopError(f"imbalance: minority classes keep at least 1 shot, got {self.minority_shots}")

    def num_minority(self, ways: int) -> int:
        return round_half_up(self.minority_fraction * ways)

    def check(self, ways: int, shots: int) -> None:
        """Refuse an episode shape this imbalance cannot apply to, saying what to change."""
        if not self.minority_shots < shots:
            raise TaskError(f"imbalance keeps {self.minority_shots} shot(s) in minority classes, so "
                            f"episodes need more than {self.minority_shots} shots; got {shots}-shot episodes")
        if not 1 <= self.num_minority(ways) < ways:
            raise TaskError(f"imbalance: a minority fraction of {self.minority_fraction:g} of {ways} ways "
                            f"makes {self.num_minority(ways)} minority classes; choose a fraction that "
                            f"gives between 1 and {ways - 1}")

    def label(self, ways: int, shots: int) -> str:
        plural = "" if self.minority_shots == 1 else "s"
        return (f"{self.num_minority(ways)} of {ways} classes with {self.minority_shots} support "
                f"shot{plural} (others {shots})")

    @property
    def settings(self) -> dict[str, Any]:
        return {"minority_fraction": self.minority_fraction, "minority_shots": self.minority_shots}

    def perturb(self, learner: MetaLearner, episodes: Episodes, first_episode: int, seed: int) -> Episodes:
        self.check(episodes.ways, episodes.shots)
        kept = [imbalanced_positions(episodes.support_y[t], episodes.ways, self.num_minority(episodes.ways),
                                     self.minority_shots,
                                     torch.Generator().manual_seed(derived_seed(seed, self.condition, first_episode + t)))
                for t in range(episodes.num_tasks)]
        if len({positions.numel() for positions in kept}) != 1:
            raise TaskError("imbalance applies to balanced episodes (shots examples per class), as the sampler draws them")
        rows = torch.stack(kept)  # [T, S']
        image_rows = rows.view(*rows.shape, *[1] * (episodes.support_x.dim() - 2))
        support_x = torch.gather(episodes.support_x, 1, image_rows.expand(-1, -1, *episodes.support_x.shape[2:]))
        return dataclasses.replace(episodes, support_x=support_x, support_y=torch.gather(episodes.support_y, 1, rows))


# -- adversarial support sets ----------------------------------------------------------------
def query_nll(learner: MetaLearner, episodes: Episodes) -> Tensor:
    """Per task ``[T]``: the mean over queries of ``-log p(query_y | query_x, adapted learner)``
    under the learner's predictive."""
    predictive = learner.predictive(episodes)
    if not isinstance(predictive, CategoricalPredictive):
        raise InnerloopError(f"{learner.name}: adversarial support sets attack a classifier's query "
                             f"loss; this learner predicts {type(predictive).__name__} (regression)")
    probs = predictive.probs.gather(-1, episodes.query_y.unsqueeze(-1)).squeeze(-1)
    return -probs.clamp_min(torch.finfo(probs.dtype).tiny).log().mean(dim=-1)


def adaptation_refusal(learner: MetaLearner) -> str | None:
    """Why ``learner`` (or one of its members) cannot be attacked through its adaptation, if known."""
    for module in learner.modules():
        if isinstance(module, MetaLearner) and module.name in DETACHED_ADAPTATION:
            return DETACHED_ADAPTATION[module.name]
    return None


@contextlib.contextmanager
def differentiable_adaptation(learner: MetaLearner) -> Iterator[None]:
    """Inside: every gradient-based part of ``learner`` adapts second order (its inner steps keep
    their graph, so the adapted weights depend on the support inputs); restored afterwards."""
    from innerloop.algorithms.optimization.gradient_learner import GradientLearner

    reason = adaptation_refusal(learner)
    if reason is not None:
        raise InnerloopError(f"{learner.name}'s adaptation is not differentiable with respect to the "
                             f"support inputs: {reason}. Adversarial support sets need a method whose "
                             f"adapted predictor has that gradient; leave the condition out (--epsilon "
                             f"with no value)")
    inner_loops = [module for module in learner.modules() if isinstance(module, GradientLearner)]
    orders = [module.order for module in inner_loops]
    try:
        for module in inner_loops:
            module.order = "second"
        yield
    finally:
        for module, order in zip(inner_loops, orders):
            module.order = order


def adversarial_support_x(learner: MetaLearner, episodes: Episodes, epsilon: float, steps: int,
                          step_size: float, valid_range: tuple[float, float] | None,
                          start: Tensor | None = None, tasks_per_pass: int | None = None) -> Tensor:
    """PGD on ``episodes.support_x`` (see the module docstring): ``steps`` signed-gradient steps
    of ``step_size`` that raise the learner's query NLL, each projected onto the L∞ ball of
    radius ``epsilon`` around the clean inputs and onto ``valid_range``. ``start``: the first
    iterate (projected too); default the clean inputs. ``tasks_per_pass``: attack the tasks this
    many at a time (the same numbers: evaluation-mode learners treat tasks independently; a
    second-order inner loop keeps a large graph per task); default all at once. The learner's
    mode is left as it is."""
    if tasks_per_pass is not None and tasks_per_pass < episodes.num_tasks:
        return torch.cat([
            adversarial_support_x(learner, episodes.slice(first, first + tasks_per_pass), epsilon, steps,
                                  step_size, valid_range,
                                  None if start is None else start[first:first + tasks_per_pass])
            for first in range(0, episodes.num_tasks, tasks_per_pass)])
    clean = episodes.support_x.detach()

    def project(inputs: Tensor) -> Tensor:
        inputs = clean + (inputs - clean).clamp(-epsilon, epsilon)
        return inputs if valid_range is None else inputs.clamp(*valid_range)

    adversarial = clean if start is None else project(start.detach())
    with torch.enable_grad(), differentiable_adaptation(learner):
        for _ in range(steps):
            adversarial = adversarial.detach().requires_grad_(True)
            loss = query_nll(learner, dataclasses.replace(episodes, support_x=adversarial)).sum()
            gradient = None
            if loss.requires_grad:
                (gradient,) = torch.autograd.grad(loss, adversarial, allow_unused=True)
            # no gradient at all, or none for a whole batch of tasks (a single saturated task may
            # have an exactly zero one and then stays where it is)
            if gradient is None or (episodes.num_tasks > 1 and not bool(gradient.any())):
                raise InnerloopError(
                    f"{learner.name}'s adaptation is not differentiable with respect to the support "
                    f"inputs: its query loss has {'no' if gradient is None else 'an exactly zero'} "
                    f"gradient with respect to all {episodes.num_tasks} episodes' support images (the "
                    f"adaptation detaches the support set, as a learned update fed detached gradients "
                    f"does). Leave the adversarial condition out (--epsilon with no value)")
            # a 0 * inf inside a second-order inner step (Adam's sqrt at 0) gives nan: no move there
            step = torch.nan_to_num(gradient, nan=0.0).sign()
            adversarial = project(adversarial.detach() + step_size * step)
    return adversarial.detach()


@dataclass(frozen=True)
class AdversarialSupport:
    """PGD on the support inputs within an L∞ ball of radius ``epsilon`` (see the module docstring)."""

    epsilon: float
    steps: int = 5
    step_size: float | None = None  # None: 2.5 * epsilon / steps
    random_start: bool = False
    valid_range: tuple[float, float] | None = (0.0, 1.0)
    condition: ClassVar[str] = "adversarial"

    def __post_init__(self) -> None:
        if self.epsilon <= 0 or self.steps < 1 or (self.step_size is not None and self.step_size <= 0):
            raise InnerloopError(f"adversarial support: epsilon and the step size must be > 0 and steps "
                                 f">= 1; got epsilon={self.epsilon}, steps={self.steps}, "
                                 f"step_size={self.step_size}")

    @property
    def effective_step_size(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.epsilon / self.steps

    def label(self, ways: int, shots: int) -> str:
        start = ", random start" if self.random_start else ""  # default: from the clean images
        return (f"adversarial support, ε = {self.epsilon:g} (PGD, {self.steps} steps of "
                f"{self.effective_step_size:g}{start})")

    @property
    def settings(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "steps": self.steps, "step_size": self.effective_step_size}

    def perturb(self, learner: MetaLearner, episodes: Episodes, first_episode: int, seed: int) -> Episodes:
        start = None
        if self.random_start:
            start = episodes.support_x + torch.stack([
                (2 * torch.rand(episodes.support_x.shape[1:], generator=torch.Generator().manual_seed(
                    derived_seed(seed, self.condition, first_episode + t))) - 1) * self.epsilon
                for t in range(episodes.num_tasks)]).to(episodes.support_x)
        from innerloop.algorithms.optimization.gradient_learner import GradientLearner

        # an inner loop differentiated second order keeps ~150 MB of graph per Conv-4 task: one at a time
        inner_loops = any(isinstance(module, GradientLearner) for module in learner.modules())
        support_x = adversarial_support_x(learner, episodes, self.epsilon, self.steps,
                                          self.effective_step_size, self.valid_range, start,
                                          tasks_per_pass=1 if inner_loops else None)
        return dataclasses.replace(episodes, support_x=support_x)


# -- the protocol ----------------------------------------------------------------------------
class SupportPerturbation(Protocol):
    """What the protocol needs from a condition: a name, a label, settings, and ``perturb``,
    which returns the episodes ``first_episode, first_episode + 1, ...`` of ``episodes`` with
    their support set perturbed (a function of the episodes, their numbers and the seed)."""

    condition: ClassVar[str]

    def label(self, ways: int, shots: int) -> str: ...

    @property
    def settings(self) -> dict[str, Any]: ...

    def perturb(self, learner: MetaLearner, episodes: Episodes, first_episode: int, seed: int) -> Episodes: ...


class PerturbedEpisodes:
    """The fixed episodes with ``perturbation`` applied to each batch, for
    :func:`~innerloop.evaluate.protocol.evaluate_episodes`. Each batch is perturbed under torch's
    generator seeded from ``(seed, condition, first episode)`` (a learner that samples draws the
    same numbers every time), and the caller's random stream is left where it was."""

    def __init__(self, episodes: FixedEpisodes, perturbation: SupportPerturbation, learner: MetaLearner) -> None:
        self.episodes, self.perturbation, self.learner = episodes, perturbation, learner
        self.seed, self.num_episodes = episodes.seed, episodes.num_episodes

    def __len__(self) -> int:
        return self.num_episodes

    def batches(self, batch_size: int) -> Iterator[Episodes]:
        first = 0
        for batch in self.episodes.batches(batch_size):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derived_seed(self.seed, self.perturbation.condition, "batch", first))
                perturbed = self.perturbation.perturb(self.learner, batch, first, self.seed)
            yield perturbed
            first += len(batch)


@dataclass(frozen=True)
class ConditionResult:
    """One condition's score over the fixed episodes (``non_finite`` and ``seconds`` are reported
    in the Markdown; the JSON entry holds the five documented keys)."""

    condition: str
    label: str
    settings: dict[str, Any]
    mean: float
    ci95: float
    non_finite: int = 0
    seconds: float = 0.0

    @classmethod
    def scored(cls, condition: str, label: str, settings: dict[str, Any], result: EpisodeResult) -> ConditionResult:
        return cls(condition, label, dict(settings), result.mean, result.ci95, result.non_finite, result.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "label": self.label, "settings": dict(self.settings),
                "mean": self.mean, "ci95": self.ci95}


def evaluate_robustness(learner: MetaLearner, episodes: FixedEpisodes,
                        perturbations: Sequence[SupportPerturbation], batch_size: int = 50) -> list[ConditionResult]:
    """The clean score, then the score under each perturbation, all on ``episodes``."""
    ways, shots = episodes.sampler.ways, episodes.sampler.shots
    results = [ConditionResult.scored("clean", "clean", {}, evaluate_episodes(learner, episodes, batch_size))]
    for perturbation in perturbations:
        result = evaluate_episodes(learner, PerturbedEpisodes(episodes, perturbation, learner), batch_size)
        results.append(ConditionResult.scored(perturbation.condition, perturbation.label(ways, shots),
                                              perturbation.settings, result))
    return results


def input_range(sampler: Any) -> tuple[float, float] | None:
    """The valid range of a sampler's inputs: ``[0, 1]`` for image stores (``uint8 / 255``, see
    :func:`~innerloop.tasks.sampler.to_unit_float`), ``None`` (unbounded) for feature vectors."""
    if isinstance(sampler, EpisodeSampler) and not sampler.split.store.images.is_floating_point():
        return (0.0, 1.0)
    return None


# -- reports and the run-directory entry point -----------------------------------------------
@dataclass(frozen=True)
class RobustnessReport:
    """The clean and perturbed scores of one run, saved as JSON (the documented schema) and Markdown."""

    method: str
    dataset: str
    split: str
    ways: int
    shots: int
    queries: int
    episodes: int
    seed: int
    checkpoint: str
    step: int
    metric: str
    date: str
    conditions: list[ConditionResult]
    transductive: bool = False
    notes: list[str] = field(default_factory=list)
    kind: ClassVar[str] = "robustness"

    @property
    def stem(self) -> str:
        checkpoint = self.checkpoint.removesuffix(".pt")
        return (f"robustness-{self.split}-{self.ways}w{self.shots}s{self.queries}q-{checkpoint}-"
                f"{self.episodes}ep-seed{self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "method": self.method, "dataset": self.dataset, "split": self.split,
                "ways": self.ways, "shots": self.shots, "queries": self.queries, "episodes": self.episodes,
                "seed": self.seed, "checkpoint": self.checkpoint, "step": self.step, "metric": self.metric,
                "date": self.date, "conditions": [condition.to_dict() for condition in self.conditions]}

    def _format(self, value: float, ci95: float) -> str:
        if self.metric == "accuracy":
            return f"{100 * value:.2f}% ± {100 * ci95:.2f}%"
        return f"{value:.4f} ± {ci95:.4f}"

    def markdown(self) -> str:
        clean = self.conditions[0].mean
        unit = "points" if self.metric == "accuracy" else ""
        scale = 100 if self.metric == "accuracy" else 1
        lines = [f"# Robustness of {self.method} on {self.dataset} ({self.split}), "
                 f"{self.ways}-way {self.shots}-shot", "",
                 f"| condition | {self.metric} (95% CI) | change from clean | time |", "| --- | --- | --- | --- |"]
        for result in self.conditions:
            change = "" if result.condition == "clean" else f"{scale * (result.mean - clean):+.2f} {unit}".rstrip()
            excluded = (f" ({result.non_finite} of {self.episodes} episodes non-finite, left out)"
                        if result.non_finite else "")
            lines.append(f"| {result.label} | **{self._format(result.mean, result.ci95)}**{excluded} | "
                         f"{change} | {result.seconds:.0f} s |")
        lines += ["", "| | |", "| --- | --- |",
                  f"| method | {self.method} |",
                  f"| transductive | {'yes' if self.transductive else 'no'} |",
                  f"| dataset / split | {self.dataset} / {self.split} |",
                  f"| ways / shots / queries per class | {self.ways} / {self.shots} / {self.queries} |",
                  f"| episodes (fixed, seeded) | {self.episodes} (seed {self.seed}); every condition "
                  f"perturbs the support sets of these episodes, queries untouched |",
                  f"| checkpoint | {self.checkpoint} (step {self.step}) |",
                  f"| date | {self.date} |",
                  *(f"| note | {note} |" for note in self.notes), ""]
        return "\n".join(lines)

    def save(self, run_dir: Path) -> tuple[Path, Path]:
        json_path, markdown_path = run_dir / f"{self.stem}.json", run_dir / f"{self.stem}.md"
        for path, text in ((json_path, json.dumps(self.to_dict(), indent=2) + "\n"),
                           (markdown_path, self.markdown())):
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text(text)
            os.replace(temporary, path)
        return json_path, markdown_path


DEFAULT_LABEL_NOISE_RATES = (0.2, 0.4)
DEFAULT_EPSILONS = (0.1,)
DEFAULT_IMBALANCE_FRACTIONS = (0.4,)


@dataclass(frozen=True)
class RobustnessSettings:
    """Which conditions :func:`robustness_run` scores. ``None`` asks for the defaults (label noise
    0.2 and 0.4, PGD with epsilon 0.1, 40% of the ways at ``minority_shots``), left out where the
    episode shape or the method rules them out (with a note); an explicit value is always run
    (or refused with an error), an empty tuple skips the condition."""

    label_noise_rates: tuple[float, ...] | None = None
    epsilons: tuple[float, ...] | None = None
    pgd_steps: int = 5
    step_size: float | None = None  # None: 2.5 * epsilon / pgd_steps
    random_start: bool = False
    imbalance_fractions: tuple[float, ...] | None = None
    minority_shots: int = 1

    def perturbations(self, learner: MetaLearner, ways: int, shots: int,
                      valid_range: tuple[float, float] | None) -> tuple[list[SupportPerturbation], list[str]]:
        """The perturbations to score, and notes on defaults left out."""
        chosen: list[SupportPerturbation] = []
        notes: list[str] = []
        support_size = ways * shots
        for rate in DEFAULT_LABEL_NOISE_RATES if self.label_noise_rates is None else self.label_noise_rates:
            if (self.label_noise_rates is None and shots == 1
                    and round_half_up(rate * support_size) == 1):
                notes.append(f"default {rate:g} label noise left out: it would corrupt the only example "
                             f"of one class")
                continue
            chosen.append(SupportLabelNoise(rate))
        for epsilon in DEFAULT_EPSILONS if self.epsilons is None else self.epsilons:
            if self.epsilons is None and adaptation_refusal(learner) is not None:
                notes.append(f"default adversarial condition left out: {adaptation_refusal(learner)}")
                continue
            chosen.append(AdversarialSupport(epsilon, self.pgd_steps, self.step_size, self.random_start, valid_range))
        for fraction in DEFAULT_IMBALANCE_FRACTIONS if self.imbalance_fractions is None else self.imbalance_fractions:
            imbalance = SupportImbalance(fraction, self.minority_shots)
            if self.imbalance_fractions is None and shots <= self.minority_shots:
                notes.append(f"default imbalance left out: {shots}-shot episodes have no class to shrink "
                             f"to {self.minority_shots} shot(s)")
                continue
            imbalance.check(ways, shots)
            chosen.append(imbalance)
        return chosen, notes




def robustness_run(run_dir: str | Path, settings: RobustnessSettings | None = None, checkpoint: str = "best",
                   data_root: str | Path | None = None, overrides: list[str] | None = None,
                   backbone: UserBackbone | None = None) -> RobustnessReport:
    """Score ``run_dir``'s ``checkpoint`` (``best`` or ``last``) on its fixed test episodes,
    clean and under each condition of ``settings``; save and return the report.

    ``overrides`` are ``eval.*``, ``data.test_split``, ``inner.eval_steps`` or ``num_threads``
    assignments such as ``eval.episodes=600``, as for ``innerloop eval``. Gradient-based methods
    are scored after their headline ``inner.eval_steps``. ``backbone``: your module, for a run
    trained on one (``model.backbone: custom``).
    """
    from innerloop.algorithms.optimization.gradient_learner import GradientLearner
    from innerloop.build import build_sampler, load_splits
    from innerloop.evaluate.run import check_evaluation_overrides, load_run

    run_dir = Path(run_dir)
    check_evaluation_overrides(overrides)
    config, learner, payload, path = load_run(run_dir, checkpoint, overrides, backbone)
    if learner.metric_name != "accuracy":
        raise InnerloopError(f"robustness evaluation perturbs the support sets of classification episodes; "
                             f"{config.data.dataset} is a regression dataset")
    split = load_splits(config, data_root, [config.data.test_split])[config.data.test_split]
    evaluation = config.eval
    sampler = build_sampler(config, split, evaluation.ways, evaluation.shots, evaluation.queries)
    episodes = FixedEpisodes(sampler, evaluation.episodes, evaluation.seed)
    valid_range = input_range(sampler)
    perturbations, notes = (settings or RobustnessSettings()).perturbations(
        learner, evaluation.ways, evaluation.shots, valid_range)
    results = evaluate_robustness(learner, episodes, perturbations, evaluation.batch_size)
    notes = [f"adaptation per task: {learner.adaptation_cost()}", *notes]
    inner_loops = [m for m in learner.modules() if isinstance(m, GradientLearner)]
    if inner_loops:
        notes.append(f"scored after {inner_loops[0].eval_inner_steps} inner steps ({inner_loops[0].order} "
                     f"order in training); the attack differentiates through them second order")
    attacks = [p for p in perturbations if isinstance(p, AdversarialSupport)]
    if attacks:
        bounds = "none (feature vectors)" if valid_range is None else f"[{valid_range[0]:g}, {valid_range[1]:g}]"
        start = ("a uniform random point of the ball (seeded per episode)" if attacks[0].random_start
                 else "the clean images")
        notes.append(f"adversarial support: L∞ PGD on the support inputs maximising the query NLL of the "
                     f"adapted learner, from {start}; inputs clamped to the data's valid range {bounds}")
    report = RobustnessReport(
        method=learner.name, dataset=config.data.dataset, split=split.name, ways=evaluation.ways,
        shots=evaluation.shots, queries=evaluation.queries, episodes=evaluation.episodes,
        seed=evaluation.seed, checkpoint=path.name, step=int(payload["step"]), metric=learner.metric_name,
        date=today(), conditions=results, transductive=learner.transductive, notes=notes)
    report.save(run_dir)
    return report
