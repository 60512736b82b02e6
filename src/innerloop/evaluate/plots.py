"""Plots a person can look at: regression fits before and after adaptation."""

from __future__ import annotations

from pathlib import Path

import torch

from innerloop.algorithms.optimization.gradient_learner import GradientLearner
from innerloop.functional.params import run
from innerloop.tasks.regression import SinusoidTasks


def plot_regression_fits(learner: GradientLearner, tasks: SinusoidTasks, path: str | Path,
                         num_tasks: int = 4, steps: tuple[int, ...] = (0, 1, 10), seed: int = 0) -> Path:
    """Draw ``num_tasks`` test tasks: the true curve, the support points, and the learner's fit
    after each inner step count in ``steps`` (0 is the meta-learned initialization). Saves a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = tasks.sample_indices(num_tasks, torch.Generator().manual_seed(seed))
    episodes = tasks.gather(plan)
    low, high = tasks.split.input_range
    grid = torch.linspace(low, high, 200).view(1, -1, 1).expand(num_tasks, -1, -1)
    truth = plan.targets(grid)
    was_training, saved_steps = learner.training, learner.eval_inner_steps
    learner.eval()
    fits = {}
    try:
        for count in steps:
            learner.eval_inner_steps = count
            with torch.no_grad():
                fits[count] = torch.stack([
                    run(learner.network, learner.adapt(episodes.support_x[t], episodes.support_y[t], 1).params,
                        grid[t]) for t in range(num_tasks)])
    finally:
        learner.train(was_training)
        learner.eval_inner_steps = saved_steps
    figure, axes = plt.subplots(1, num_tasks, figsize=(4 * num_tasks, 3.2), sharey=True)
    for t, axis in enumerate(list(axes) if num_tasks > 1 else [axes]):
        axis.plot(grid[t, :, 0], truth[t, :, 0], color="black", linewidth=2, label="true function")
        for count, fit in fits.items():
            style = "--" if count == 0 else "-"
            axis.plot(grid[t, :, 0], fit[t, :, 0], style, label=f"after {count} inner steps")
        axis.scatter(episodes.support_x[t, :, 0], episodes.support_y[t, :, 0], color="red", zorder=3,
                     label=f"support ({tasks.shots} points)")
        axis.set_title(f"amplitude {float(plan.amplitude[t]):.2f}, phase {float(plan.phase[t]):.2f}")
        axis.set_xlabel("x")
    axes_list = list(axes) if num_tasks > 1 else [axes]
    axes_list[0].set_ylabel("y")
    axes_list[0].legend(fontsize=7, loc="lower left")
    figure.suptitle(f"{learner.name} on sinusoid regression: fits before and after adaptation")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
