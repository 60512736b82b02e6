"""Meta-RL evaluation: the average return on fixed seeded test tasks before adaptation and after
1, 2, ... ``eval.steps`` adaptation steps, each with a 95% confidence interval over the tasks.

Test tasks are ``env.sample_tasks(eval.tasks, seed=eval.seed)`` (training draws its tasks from
other seeds); step ``k``'s ``eval.episodes_per_task`` episodes are sampled with the parameters
adapted on step ``k - 1``'s episodes. The per-task mean returns are kept in ``eval.json`` so that
runs can be compared task for task. RL² reports the return of each episode of a trial instead
(its adaptation is the recurrent state, one "step" per episode).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from innerloop.evaluate.protocol import mean_and_ci95
from innerloop.rl.build import build_rl_learner, env_factory
from innerloop.rl.config import RLConfig, rl_config_from_dict
from innerloop.rl.rollout import VectorRollout
from innerloop.rl.trainer import load_run_config
from innerloop.train.checkpoint import LAST, load_checkpoint


@dataclass
class RLEvaluation:
    algorithm: str
    env: str
    env_options: dict
    steps: list[int]  # adaptation steps (RL²: episode index within the trial)
    mean_return: list[float]
    ci95: list[float]
    tasks: int
    episodes_per_task: int
    seed: int
    step_label: str = "adaptation steps"
    per_task_returns: list[list[float]] = field(default_factory=list)  # [step][task]
    gain: list[float] = field(default_factory=list)  # mean over tasks of (return at step k - return at step 0)
    gain_ci95: list[float] = field(default_factory=list)  # paired over the same tasks: narrower than the CIs above
    success_rate: list[float] | None = None  # where the environment reports success (Meta-World)
    success_ci95: list[float] | None = None
    per_task_success: list[list[float]] | None = None

    def markdown(self) -> str:
        success = self.success_rate is not None
        lines = [f"### {self.algorithm} on {self.env}: average return on {self.tasks} test tasks "
                 f"({self.episodes_per_task} episodes each, seed {self.seed})", "",
                 f"| {self.step_label} | average return | 95% CI | change from {self.steps[0]} (paired 95% CI) |"
                 + (" success rate | 95% CI |" if success else ""),
                 "| ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if success else "")]
        for index, (step, mean, ci) in enumerate(zip(self.steps, self.mean_return, self.ci95)):
            change = "" if index == 0 else f"{self.gain[index]:+.2f} ± {self.gain_ci95[index]:.2f}"
            row = f"| {step} | {mean:.2f} | ± {ci:.2f} | {change} |"
            if success:
                row += f" {100 * self.success_rate[index]:.1f}% | ± {100 * self.success_ci95[index]:.1f} |"
            lines.append(row)
        return "\n".join(lines)


def evaluate_learner(config: RLConfig, learner, rollout: VectorRollout) -> RLEvaluation:
    """Score ``learner`` on ``config.eval``'s fixed test tasks."""
    env = rollout.envs[0]
    tasks = env.sample_tasks(config.eval.tasks, seed=config.eval.seed)
    scores = learner.evaluate_tasks(rollout, tasks, config.eval.episodes_per_task, seed=config.eval.seed,
                                    steps=config.eval.steps)
    returns = scores["return"]
    statistics = [mean_and_ci95(row) for row in returns]
    gains = [mean_and_ci95(row - returns[0]) for row in returns]
    success = scores.get("success")
    success_statistics = [mean_and_ci95(row) for row in success] if success is not None else None
    return RLEvaluation(
        algorithm=config.algorithm, env=config.env.name, env_options={**config.env.options, **config.eval.env_options},
        steps=list(range(returns.shape[0])), mean_return=[s[0] for s in statistics], ci95=[s[1] for s in statistics],
        tasks=len(tasks), episodes_per_task=config.eval.episodes_per_task, seed=config.eval.seed,
        step_label=getattr(learner, "evaluation_label", "adaptation steps"),
        per_task_returns=returns.tolist(), gain=[g[0] for g in gains], gain_ci95=[g[1] for g in gains],
        success_rate=[s[0] for s in success_statistics] if success_statistics else None,
        success_ci95=[s[1] for s in success_statistics] if success_statistics else None,
        per_task_success=success.tolist() if success is not None else None)


def evaluate_rl_run(run_dir: str | Path, overrides: list[str] | None = None, stem: str = "eval") -> RLEvaluation:
    """Evaluate the run's last checkpoint; writes ``<stem>.json`` and ``<stem>.md`` into ``run_dir``."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if overrides:
        config = rl_config_from_dict(config.to_dict(), overrides)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    rollout = VectorRollout(env_factory(config, config.eval.env_options))
    learner = build_rl_learner(config, rollout.envs[0], config.eval.env_options)
    learner.load_state_dict(load_checkpoint(run_dir / LAST)["learner"])
    report = evaluate_learner(config, learner, rollout)
    (run_dir / f"{stem}.json").write_text(json.dumps(asdict(report), indent=1))
    (run_dir / f"{stem}.md").write_text(report.markdown() + "\n")
    return report
