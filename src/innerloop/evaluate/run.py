"""Evaluate a trained run directory on fixed test episodes and write its reports."""

from __future__ import annotations

import time
from pathlib import Path

from innerloop.algorithms import GradientLearner
from innerloop.build import build_learner, build_sampler, load_splits, set_threads
from innerloop.config import Config, config_from_dict, without_inapplicable_model_options
from innerloop.errors import InnerloopError
from innerloop.evaluate.protocol import evaluate_episodes
from innerloop.evaluate.report import EvaluationReport, StepResult, today
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.train.checkpoint import BEST, LAST, load_checkpoint


def evaluate_run(run_dir: str | Path, checkpoint: str = "best", data_root: str | Path | None = None,
                 overrides: list[str] | None = None) -> EvaluationReport:
    """Load ``run_dir``'s config and checkpoint (``best`` or ``last``), score it, save reports.

    ``overrides`` are ``eval.*``, ``inner.eval_steps``, ``data.test_split`` or ``num_threads``
    assignments such as ``eval.ways=20``. Gradient-based methods are scored after
    ``inner.eval_steps`` inner steps, then after each count in ``eval.inner_steps``.
    """
    run_dir = Path(run_dir)
    if checkpoint not in ("best", "last"):
        raise InnerloopError(f"checkpoint must be 'best' or 'last', got '{checkpoint}'")
    path = run_dir / (BEST if checkpoint == "best" else LAST)
    if checkpoint == "best" and not path.is_file() and (run_dir / LAST).is_file():
        raise InnerloopError(f"{run_dir} has no best.pt yet (no validation has run); evaluate "
                             f"its last.pt with --checkpoint last, or finish training first")
    payload = load_checkpoint(path)
    allowed = ("data.test_split", "num_threads", "inner.eval_steps")
    for assignment in overrides or []:
        key = assignment.split("=", 1)[0].strip()
        if not (key.startswith("eval.") or key in allowed):
            raise InnerloopError(f"evaluation can only change eval.*, {', '.join(allowed)}; "
                                 f"'{key}' is fixed by the trained run")
    config: Config = config_from_dict(without_inapplicable_model_options(payload["config"]), overrides)
    set_threads(config)
    learner = build_learner(config)
    learner.load_state_dict(payload["model"])
    split = load_splits(config, data_root, [config.data.test_split])[config.data.test_split]
    evaluation = config.eval
    episodes = FixedEpisodes(build_sampler(config, split, evaluation.ways, evaluation.shots,
                                           evaluation.queries), evaluation.episodes, evaluation.seed)
    adaptation = learner.adaptation_cost()  # at the headline setting (first inner-step count)
    start = time.perf_counter()
    results = []
    notes = []
    if isinstance(learner, GradientLearner):
        notes.append(f"inner loop: {learner.inner_optimizer_name} at lr {learner.inner_lr:g}, "
                     f"{learner.gradient_flow}, adapting {learner.adapt_filter}, "
                     f"{learner.inner_steps} step(s) in training")
        step_counts = [learner.eval_inner_steps]
        for steps in evaluation.inner_steps:
            if steps not in step_counts:
                step_counts.append(steps)
        for steps in step_counts:
            learner.eval_inner_steps = steps
            result = evaluate_episodes(learner, episodes, evaluation.batch_size)
            results.append(StepResult(steps, result.mean, result.ci95, result.non_finite))
    else:
        result = evaluate_episodes(learner, episodes, evaluation.batch_size)
        results.append(StepResult(None, result.mean, result.ci95, result.non_finite))
    report = EvaluationReport(
        method=learner.name, transductive=learner.transductive, dataset=config.data.dataset,
        split=split.name, ways=evaluation.ways, shots=evaluation.shots, queries=evaluation.queries,
        episodes=evaluation.episodes, seed=evaluation.seed, metric=learner.metric_name,
        results=results, checkpoint=path.name, step=int(payload["step"]),
        seconds=time.perf_counter() - start, date=today(), notes=notes,
        adaptation=adaptation)
    report.save(run_dir)
    return report
