"""Plots a person can look at: regression fits before and after adaptation, predictive bands,
reliability diagrams and coverage curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import torch

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.optimization.gradient_learner import GradientLearner
from innerloop.algorithms.predictive import GaussianMixturePredictive
from innerloop.evaluate.uncertainty import ReliabilityBins
from innerloop.functional.params import run
from innerloop.tasks.regression import RegressionPlotTasks, SinusoidTasks


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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)
    return path


def plot_reliability_diagram(bins: ReliabilityBins, path: str | Path, title: str) -> Path:
    """Accuracy against confidence per bin, the diagonal of perfect calibration, the gap, and
    how many predictions fall in each bin. Saves a PNG."""
    plt = _pyplot()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(4.6, 5.2), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1]})
    draw_reliability_diagram(top, bottom, bins, title)
    figure.tight_layout()
    return _save(figure, path)


def draw_reliability_diagram(top, bottom, bins: ReliabilityBins, title: str, legend: bool = True) -> None:
    """Draw a reliability diagram on two matplotlib axes: accuracy per confidence bin with the
    over-/under-confidence gap on ``top``, predictions per bin (log scale) on ``bottom``."""
    import numpy as np

    width = float(bins.edges[1] - bins.edges[0])
    centers = (bins.edges[:-1] + width / 2).numpy()
    filled = (bins.counts > 0).numpy()
    accuracy, confidence = bins.accuracy.numpy(), bins.mean_confidence.numpy()
    top.bar(centers[filled], accuracy[filled], width=width, edgecolor="black", color="tab:blue",
            label="accuracy")
    over = filled & (confidence > accuracy)
    under = filled & (confidence <= accuracy)
    low, gap = np.minimum(confidence, accuracy), np.abs(confidence - accuracy)
    if over.any():  # an empty bar call would still put its label, in the wrong color, in the legend
        top.bar(centers[over], gap[over], bottom=low[over], width=width, color="tab:red", alpha=0.45,
                label="over-confident: confidence above accuracy")
    if under.any():
        top.bar(centers[under], gap[under], bottom=low[under], width=width, color="tab:green", alpha=0.45,
                label="under-confident: accuracy above confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_title(f"{title}\nECE {bins.expected_calibration_error:.4f}", fontsize=9)
    if legend:
        top.legend(fontsize=7, loc="upper left")
    bottom.bar(centers, bins.counts.numpy(), width=width, color="gray")
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("predictions")


def plot_coverage_curve(curves: dict[str, tuple[tuple[float, float], ...]], path: str | Path,
                        title: str) -> Path:
    """Observed coverage of central predictive intervals against their nominal level, one line
    per method (``curves[name] = ((nominal, observed), ...)``). Saves a PNG."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.4, 4.2))
    axis.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    for name, curve in curves.items():
        axis.plot([n for n, _ in curve], [o for _, o in curve], marker=".", label=name)
    axis.set_xlabel("nominal coverage of the central interval")
    axis.set_ylabel("observed coverage")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return _save(figure, path)


@torch.no_grad()
def plot_predictive_bands(methods: list[tuple[str, MetaLearner]], tasks: RegressionPlotTasks,
                          path: str | Path, title: str, level: float = 0.9) -> Path:
    """One row per method, one column per task: the true function, the support points, the
    predictive mean and its central ``level`` band (exact quantiles of the predictive). Saves a PNG."""
    plt = _pyplot()
    episodes = tasks.episodes
    num_tasks = episodes.num_tasks
    figure, axes = plt.subplots(len(methods), num_tasks, figsize=(3.6 * num_tasks, 2.5 * len(methods)),
                                sharex=True, squeeze=False)
    grid = episodes.query_x[..., 0]
    for row, (name, learner) in enumerate(methods):
        was_training = learner.training
        learner.eval()
        try:
            predictive = learner.predictive(episodes)
        finally:
            learner.train(was_training)
        if not isinstance(predictive, GaussianMixturePredictive):
            raise ValueError(f"{name} does not predict a regression distribution")
        low, high = predictive.quantile((1 - level) / 2), predictive.quantile((1 + level) / 2)
        for t in range(num_tasks):
            axis = axes[row, t]
            axis.fill_between(grid[t], low[t], high[t], color="tab:blue", alpha=0.25,
                              label=f"{100 * level:g}% predictive interval")
            axis.plot(grid[t], predictive.mean[t], color="tab:blue", label="predictive mean")
            axis.plot(grid[t], tasks.truth[t], color="black", linewidth=1, label="true function")
            if bool((tasks.noise_std[t] > 0).any()):
                z = 1.6448536269514722  # the 90% central interval of a standard normal
                for sign in (-1, 1):
                    axis.plot(grid[t], tasks.truth[t] + sign * z * tasks.noise_std[t], ":",
                              color="black", linewidth=0.8,
                              label="true 90% noise interval" if sign > 0 else None)
            axis.scatter(episodes.support_x[t, :, 0], episodes.support_y[t, :, 0], color="red",
                         s=14, zorder=3, label=f"support ({episodes.shots} points)")
            if t == 0:
                axis.set_ylabel(name)
        axes[row, 0].legend(fontsize=6, loc="upper left") if row == 0 else None
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)
