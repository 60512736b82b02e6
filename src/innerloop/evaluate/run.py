"""Evaluate a trained run directory on fixed test episodes and write its reports."""

from __future__ import annotations

import time
from pathlib import Path

from innerloop.build import build_learner, load_splits, set_threads
from innerloop.config import Config, config_from_dict
from innerloop.errors import InnerloopError
from innerloop.evaluate.protocol import evaluate_accuracy
from innerloop.evaluate.report import EvaluationReport, today
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.tasks.sampler import EpisodeSampler
from innerloop.train.checkpoint import BEST, LAST, load_checkpoint


def evaluate_run(run_dir: str | Path, checkpoint: str = "best", data_root: str | Path | None = None,
                 overrides: list[str] | None = None) -> EvaluationReport:
    """Load ``run_dir``'s config and checkpoint (``best`` or ``last``), score it, save reports.

    ``overrides`` are ``eval.*``/``data.test_split`` assignments such as ``eval.ways=20``.
    """
    run_dir = Path(run_dir)
    if checkpoint not in ("best", "last"):
        raise InnerloopError(f"checkpoint must be 'best' or 'last', got '{checkpoint}'")
    path = run_dir / (BEST if checkpoint == "best" else LAST)
    if checkpoint == "best" and not path.is_file() and (run_dir / LAST).is_file():
        raise InnerloopError(f"{run_dir} has no best.pt yet (no validation has run); evaluate "
                             f"its last.pt with --checkpoint last, or finish training first")
    payload = load_checkpoint(path)
    for assignment in overrides or []:
        key = assignment.split("=", 1)[0].strip()
        if not (key.startswith("eval.") or key == "data.test_split" or key == "num_threads"):
            raise InnerloopError(f"evaluation can only change eval.*, data.test_split and "
                                 f"num_threads; '{key}' is fixed by the trained run")
    config: Config = config_from_dict(payload["config"], overrides)
    set_threads(config)
    learner = build_learner(config)
    learner.load_state_dict(payload["model"])
    split = load_splits(config, data_root, [config.data.test_split])[config.data.test_split]
    evaluation = config.eval
    episodes = FixedEpisodes(EpisodeSampler(split, evaluation.ways, evaluation.shots,
                                            evaluation.queries), evaluation.episodes, evaluation.seed)
    start = time.perf_counter()
    result = evaluate_accuracy(learner, episodes, evaluation.batch_size)
    report = EvaluationReport(
        method=learner.name, transductive=learner.transductive, dataset=config.data.dataset,
        split=split.name, ways=evaluation.ways, shots=evaluation.shots, queries=evaluation.queries,
        episodes=evaluation.episodes, seed=evaluation.seed, accuracy=result.mean, ci95=result.ci95,
        checkpoint=path.name, step=int(payload["step"]), seconds=time.perf_counter() - start,
        date=today())
    report.save(run_dir)
    return report
