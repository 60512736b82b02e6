"""Evaluate a trained run directory on fixed test episodes and write its reports."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from innerloop.algorithms import GradientLearner, MetaLearner
from innerloop.build import build_learner, build_sampler, load_evaluation_split, set_threads
from innerloop.build import UserBackbone  # your own backbone module
from innerloop.config import Config, config_from_dict, without_inapplicable_model_options
from innerloop.errors import InnerloopError
from innerloop.evaluate.plots import plot_coverage_curve, plot_predictive_bands, plot_reliability_diagram
from innerloop.evaluate.protocol import UncertaintyResult, evaluate_episodes, evaluate_uncertainty
from innerloop.evaluate.report import EvaluationReport, StepResult, today
from innerloop.tasks.fixed import FixedEpisodes, TaskSampler
from innerloop.train.checkpoint import BEST, LAST, load_checkpoint


def evaluate_run(run_dir: str | Path, checkpoint: str = "best", data_root: str | Path | None = None,
                 overrides: list[str] | None = None, backbone: UserBackbone | None = None) -> EvaluationReport:
    """Load ``run_dir``'s config and checkpoint (``best`` or ``last``), score it, save reports.

    ``overrides`` are ``eval.*``, ``inner.eval_steps``, ``data.test_split`` or ``num_threads``
    assignments such as ``eval.ways=20``. Gradient-based methods are scored after
    ``inner.eval_steps`` inner steps, then after each count in ``eval.inner_steps``. The
    predictive distribution is scored too (NLL, Brier, ECE; for regression Gaussian NLL and
    interval coverage) and its figures are saved next to the report.
    """
    run_dir = Path(run_dir)
    check_evaluation_overrides(overrides)
    config, learner, payload, path = load_run(run_dir, checkpoint, overrides, backbone)
    split = load_evaluation_split(config, data_root)
    evaluation = config.eval
    sampler = build_sampler(config, split, evaluation.ways, evaluation.shots, evaluation.queries)
    episodes = FixedEpisodes(sampler, evaluation.episodes, evaluation.seed)
    adaptation = learner.adaptation_cost()  # at the headline setting (first inner-step count)
    start = time.perf_counter()
    results = []
    notes = []
    # a gradient-based learner, or a deep ensemble of them: scored after each inner-step count
    gradient_learners = [member for member in getattr(learner, "members", [learner])
                         if isinstance(member, GradientLearner)]
    if gradient_learners:
        first = gradient_learners[0]
        notes.append(f"inner loop: {first.inner_optimizer_name} at lr {first.inner_lr:g}, "
                     f"{first.gradient_flow}, adapting {first.adapt_filter}, "
                     f"{first.inner_steps} step(s) in training")
        step_counts = [first.eval_inner_steps]
        for steps in evaluation.inner_steps:
            if steps not in step_counts:
                step_counts.append(steps)
        for steps in step_counts:
            for member in gradient_learners:
                member.eval_inner_steps = steps
            result = evaluate_episodes(learner, episodes, evaluation.batch_size)
            results.append(StepResult(steps, result.mean, result.ci95, result.non_finite))
        for member in gradient_learners:  # uncertainty at the headline setting
            member.eval_inner_steps = step_counts[0]
    else:
        result = evaluate_episodes(learner, episodes, evaluation.batch_size)
        results.append(StepResult(None, result.mean, result.ci95, result.non_finite))
    uncertainty = evaluate_uncertainty(learner, episodes, evaluation.batch_size,
                                       evaluation.calibration_bins, tuple(evaluation.interval_levels))
    report = EvaluationReport(
        method=learner.name, transductive=learner.transductive, dataset=config.eval.dataset or config.data.dataset,
        trained_on=config.data.dataset,
        split=split.name, ways=evaluation.ways, shots=evaluation.shots, queries=evaluation.queries,
        episodes=evaluation.episodes, seed=evaluation.seed, metric=learner.metric_name,
        results=results, checkpoint=path.name, step=int(payload["step"]),
        seconds=time.perf_counter() - start, date=today(), notes=notes,
        adaptation=adaptation,
        uncertainty={name: [mean, ci95] for name, (mean, ci95) in uncertainty.metrics.items()},
        reliability=None if uncertainty.reliability is None else uncertainty.reliability.to_dict())
    report = dataclasses.replace(report, figures=save_figures(learner, report, uncertainty, sampler, run_dir))
    report.save(run_dir)
    return report


EVALUATION_OVERRIDES = ("data.test_split", "num_threads", "inner.eval_steps")


def check_evaluation_overrides(overrides: list[str] | None) -> None:
    """Evaluation may change ``eval.*`` and :data:`EVALUATION_OVERRIDES`; everything else is
    fixed by the trained run (and, e.g., ``data.val_split`` must not reach test intents)."""
    for assignment in overrides or []:
        key = assignment.split("=", 1)[0].strip()
        if not (key.startswith("eval.") or key in EVALUATION_OVERRIDES):
            raise InnerloopError(f"evaluation can only change eval.*, {', '.join(EVALUATION_OVERRIDES)}; "
                                 f"'{key}' is fixed by the trained run")


def load_run(run_dir: str | Path, checkpoint: str = "best", overrides: list[str] | None = None,
             backbone: UserBackbone | None = None) -> tuple[Config, MetaLearner, dict, Path]:
    """A trained run's config (with ``overrides``), its learner with the weights of
    ``checkpoint`` (``best`` or ``last``), the checkpoint's payload and its path. A run trained on
    your own module (``model.backbone: custom``) needs it again as ``backbone``."""
    run_dir = Path(run_dir)
    if checkpoint not in ("best", "last"):
        raise InnerloopError(f"checkpoint must be 'best' or 'last', got '{checkpoint}'")
    path = run_dir / (BEST if checkpoint == "best" else LAST)
    if checkpoint == "best" and not path.is_file() and (run_dir / LAST).is_file():
        raise InnerloopError(f"{run_dir} has no best.pt yet (no validation has run); evaluate "
                             f"its last.pt with --checkpoint last, or finish training first")
    payload = load_checkpoint(path)
    config = config_from_dict(without_inapplicable_model_options(payload["config"]), overrides)
    set_threads(config)
    learner = build_learner(config, backbone)
    learner.load_state_dict(payload["model"])
    return config, learner, payload, path


def save_figures(learner: MetaLearner, report: EvaluationReport, uncertainty: UncertaintyResult,
                 sampler: TaskSampler, run_dir: Path) -> list[str]:
    """The evaluation's pictures: a reliability diagram (classification), or the predictive
    bands on three test tasks and the coverage curve (regression). Returns the file names."""
    title = f"{report.method} on {report.dataset} ({report.split}), {report.ways}-way {report.shots}-shot"
    if uncertainty.reliability is not None:
        path = plot_reliability_diagram(uncertainty.reliability, run_dir / f"{report.stem}-reliability.png", title)
        return [path.name]
    title = f"{report.method} on {report.dataset} ({report.split}), {report.shots}-shot"
    bands = plot_predictive_bands([(report.method, learner)], sampler.plot_tasks(3, report.seed),
                                  run_dir / f"{report.stem}-bands.png", title)
    coverage = plot_coverage_curve({report.method: uncertainty.coverage_curve},
                                   run_dir / f"{report.stem}-coverage.png", title)
    return [bands.name, coverage.name]
