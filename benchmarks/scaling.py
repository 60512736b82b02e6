"""Scaling curves of MAML: time and peak memory per meta-step as the meta-batch, the ways, the inner
steps and the image size grow.

MAML, second order, on Conv-4 (64 channels, per-task batch norm), Omniglot-shaped 1-shot tasks
(1 channel, 15 queries per class, random pixels: neither time nor memory depends on them), inner
SGD at 0.4, built as the Trainer builds it by default: per-task loop with each task's graph freed
as soon as its meta-gradient is taken (``backward_per_task``), one task worker per thread, NHWC
weights and images, freed memory kept for reuse (``innerloop.allocator``). Around the baseline (meta-batch 32, 5 ways, 1 inner step, 28x28) one
axis varies at a time: meta-batch 4, 8, 16, 32, 64; ways 5, 10, 20; inner steps 1, 2, 5, 10; image
side 28, 42, 56, 84. References: first-order MAML over the inner steps (no inner graph is kept, so its
memory should stay flat) and ProtoNet (Conv-4 with ordinary batch norm, no inner loop) over the
meta-batch.

Each configuration runs in a fresh subprocess (so its peak resident memory is its own): one warm-up
step, then ``--steps`` timed steps of ``meta_loss`` + ``backward``. Reported: seconds per meta-step,
tasks/s and the peak resident memory above the process's baseline. The baseline configuration is measured once
and shared by the four axes. Along a curve the points run in increasing order, and a point whose
time or memory, extrapolated in proportion from the previous point (to the meta-batch, the ways,
inner steps + 1 or the pixels: an overestimate), would pass 60 s per step or 16 GiB (or 80% of
the memory then available) is skipped and recorded as skipped, with every larger point after it.
``--quick`` runs a reduced grid around meta-batch 4 as a smoke test.

Writes the JSON, a Markdown table next to it (same stem, ``.md``: one table per axis) and, with
``--plot``, a 2x4 figure (seconds per meta-step on top, peak memory below, one column per axis).

    python -m benchmarks.scaling [--threads 2] [--steps 2] [--quick] [--json benchmarks/results/scaling.json] [--plot docs/scaling.png]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.maml_speed import QUERIES, SHOTS, TASKS, WAYS, conv4_episodes, timed

AXES = ("meta_batch", "ways", "inner_steps", "image_size")
BASELINE = {"meta_batch": TASKS, "ways": WAYS, "inner_steps": 1, "image_size": 28}
GRID = {"meta_batch": (4, 8, 16, 32, 64), "ways": (5, 10, 20), "inner_steps": (1, 2, 5, 10),
        "image_size": (28, 42, 56, 84)}
QUICK_BASELINE = {"meta_batch": 4, "ways": WAYS, "inner_steps": 1, "image_size": 28}
QUICK_GRID = {"meta_batch": (2, 4), "ways": (5, 10), "inner_steps": (1, 2, 3), "image_size": (28, 56)}
CURVES = (("maml-second", AXES), ("maml-first", ("inner_steps",)), ("protonet", ("meta_batch",)))
LABELS = {"maml-second": "MAML, second order", "maml-first": "MAML, first order", "protonet": "ProtoNet"}
COLORS = {"maml-second": "tab:blue", "maml-first": "tab:orange", "protonet": "tab:green"}
AXIS_LABELS = {"meta_batch": "meta-batch (tasks)", "ways": "ways", "inner_steps": "inner steps",
               "image_size": "image side (pixels)"}
INNER_LR = 0.4
MAX_SECONDS, MAX_MIB = 60.0, 16 * 1024


def cost(axis: str, value: int) -> int:
    """What time and memory grow in proportion to (at most) along ``axis``."""
    return {"meta_batch": value, "ways": value, "inner_steps": value + 1, "image_size": value * value}[axis]


def episodes(tasks: int, ways: int, image_size: int):
    """``conv4_episodes`` generalized to other ways and image sizes (the same tensors at 5 ways, 28x28)."""
    if (ways, image_size) == (WAYS, 28):
        return conv4_episodes(tasks)
    import torch

    from innerloop.tasks.episodes import Episodes

    generator = torch.Generator().manual_seed(0)
    return Episodes(
        support_x=torch.rand(tasks, ways * SHOTS, 1, image_size, image_size, generator=generator),
        support_y=torch.arange(ways).repeat_interleave(SHOTS).repeat(tasks, 1),
        query_x=torch.rand(tasks, ways * QUERIES, 1, image_size, image_size, generator=generator),
        query_y=torch.arange(ways).repeat_interleave(QUERIES).repeat(tasks, 1),
        ways=ways, shots=SHOTS, queries=QUERIES, class_ids=torch.zeros(tasks, ways, dtype=torch.int64))


def build(method: str, ways: int, inner_steps: int, image_size: int, threads: int):
    """The learner with the Trainer's default speed settings (see the module docstring)."""
    import torch

    from innerloop.algorithms import MAML, ProtoNet
    from innerloop.nn import Conv4

    if method == "protonet":
        learner = ProtoNet(Conv4(image_size=image_size, batch_norm="running"))
    else:
        learner = MAML(Conv4(image_size=image_size, batch_norm="task"), ways, inner_steps=inner_steps,
                       inner_lr=INNER_LR, order=method.removeprefix("maml-"), backward_per_task=True,
                       task_workers=threads)
    return learner.to(memory_format=torch.channels_last)


def measure(method: str, tasks: int, ways: int, inner_steps: int, image_size: int, threads: int,
            steps: int) -> dict:
    """Run in the child process: time ``steps`` meta-training steps, report peak memory."""
    import torch

    from innerloop.allocator import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    learner = build(method, ways, inner_steps, image_size, threads)
    return timed(learner, episodes(tasks, ways, image_size), steps, baseline_kib)


def available_mib() -> float:
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.inf


def run_child(method: str, config: dict, args: argparse.Namespace) -> dict:
    """Measure one configuration in a fresh subprocess; a failure or timeout is recorded, not raised."""
    command = [sys.executable, "-m", "benchmarks.scaling", "--threads", str(args.threads),
               "--steps", str(args.steps), "--child", method,
               *(str(config[axis]) for axis in AXES)]
    timeout = int((args.steps + 1) * MAX_SECONDS * 2 + 120)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout} s"}
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"failed (exit {result.returncode}): {last}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def too_large(axis: str, value: int, previous: tuple[int, dict] | None) -> str | None:
    """Why the point should be skipped, extrapolating in proportion from the previous point."""
    if previous is None:
        return None
    last_value, last = previous
    if "skipped" in last:
        return f"a smaller {AXIS_LABELS[axis]} was skipped"
    ratio = cost(axis, value) / cost(axis, last_value)
    seconds, mib = last["seconds_per_step"] * ratio, last["peak_memory_mib"] * ratio
    limit = min(MAX_MIB, 0.8 * available_mib())
    if seconds > MAX_SECONDS:
        return f"projected {seconds:.0f} s per step > {MAX_SECONDS:.0f} s"
    if mib > limit:
        return f"projected {mib / 1024:.1f} GiB > {limit / 1024:.1f} GiB"
    return None


def describe(config: dict, method: str) -> str:
    steps = "" if method == "protonet" else f", {config['inner_steps']} inner step(s)"
    return (f"meta-batch {config['meta_batch']}, {config['ways']}-way{steps}, "
            f"{config['image_size']}x{config['image_size']}")


def sweep(args: argparse.Namespace, baseline: dict, grid: dict) -> list[dict]:
    """Every curve, one point at a time; each configuration measured once (the baseline is shared)."""
    measured: dict[tuple, dict] = {}
    rows = []
    for method, axes in CURVES:
        for axis in axes:
            previous = None
            for value in grid[axis]:
                config = {**baseline, axis: value}
                if method == "protonet":
                    config["inner_steps"] = 0
                key = (method, *config.values())
                shared = key in measured
                if not shared:
                    reason = too_large(axis, value, previous)
                    measured[key] = {"skipped": reason} if reason else run_child(method, config, args)
                result = measured[key]
                previous = (value, result)
                row = {"method": method, "axis": axis, "value": value, "baseline": value == baseline[axis],
                       **config, **result}
                if method == "protonet":
                    row["inner_steps"] = None
                rows.append(row)
                if "skipped" in result:
                    outcome = f"skipped: {result['skipped']}"
                else:
                    outcome = (f"{result['seconds_per_step']:7.2f} s/step {result['tasks_per_s']:7.1f} tasks/s "
                               f"{result['peak_memory_mib']:7.0f} MiB" + (" (measured above)" if shared else ""))
                print(f"{LABELS[method]:18s} | {axis:11s} {value:>3} | {describe(config, method):48s} | {outcome}",
                      flush=True)
    return rows


def markdown(report: dict) -> str:
    baseline = report["baseline"]
    lines = ["# Scaling of MAML: time and peak memory per meta-step", "",
             f"{report['setting']}. {report['threads']} CPU threads, {report['timed_steps']} timed steps after "
             f"one warm-up step, each configuration in a fresh process; peak resident memory above the "
             f"process's baseline. torch {report['torch']}, {report['machine']}, {report['date']}. "
             f"Generated by `python -m benchmarks.scaling`.", ""]
    for axis in AXES:
        name = AXIS_LABELS[axis]
        lines += [f"## Varying the {name.split(' (')[0]} (baseline {baseline[axis]}, in bold)", "",
                  f"| {name} | method | seconds per meta-step | tasks/s | peak MiB |",
                  "|---:|---|---:|---:|---:|"]
        for row in report["results"]:
            if row["axis"] != axis:
                continue
            value = f"**{row['value']}**" if row["baseline"] else str(row["value"])
            if "skipped" in row:
                lines.append(f"| {value} | {LABELS[row['method']]} | skipped: {row['skipped']} | | |")
            else:
                lines.append(f"| {value} | {LABELS[row['method']]} | {row['seconds_per_step']:.2f} | "
                             f"{row['tasks_per_s']:.1f} | {row['peak_memory_mib']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    baseline, rows = report["baseline"], report["results"]
    figure, grid = plt.subplots(2, 4, figsize=(17, 8))
    number = FuncFormatter(lambda value, _: f"{value:g}")
    for column, axis in enumerate(AXES):
        top, bottom = grid[:, column]
        values = report["grid"][axis]
        skipped = []
        for method, axes in CURVES:
            if axis not in axes:
                continue
            points = [r for r in rows if r["axis"] == axis and r["method"] == method]
            done = [r for r in points if "skipped" not in r]
            skipped += [f"{LABELS[method]} at {r['value']}: {r['skipped']}" for r in points if "skipped" in r]
            xs = [r["value"] for r in done]
            for panel, key in ((top, "seconds_per_step"), (bottom, "peak_memory_mib")):
                panel.plot(xs, [r[key] for r in done], marker="o", color=COLORS[method], label=LABELS[method])
        reference = next((r for r in rows if r["axis"] == axis and r["method"] == "maml-second"
                          and r["baseline"] and "skipped" not in r), None)
        if reference is not None and axis != "inner_steps":
            guide = {"meta_batch": "tasks", "ways": "ways", "image_size": "pixels"}[axis]
            scale = [cost(axis, v) / cost(axis, baseline[axis]) for v in values]
            for panel, key in ((top, "seconds_per_step"), (bottom, "peak_memory_mib")):
                panel.plot(values, [reference[key] * s for s in scale], ":", color="gray", linewidth=1,
                           label=f"proportional to {guide}")
        for panel in (top, bottom):
            if axis == "inner_steps":  # linear: memory linear in the steps (second order) or flat (first)
                panel.set_ylim(bottom=0)
            else:  # log-log: a slope-1 line is time or memory in proportion to the axis
                panel.set_xscale("log")
                panel.set_yscale("log")
                panel.xaxis.set_minor_locator(NullLocator())
                panel.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 3, 5)))
                panel.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
            panel.set_xticks(values)
            panel.xaxis.set_major_formatter(number)
            panel.yaxis.set_major_formatter(number)
            panel.axvline(baseline[axis], color="gray", linewidth=0.8, alpha=0.5)
            panel.grid(True, which="both", alpha=0.25)
        top.set_title(f"varying the {AXIS_LABELS[axis].split(' (')[0]}", fontsize=10)
        top.legend(fontsize=7, loc="upper left")
        bottom.set_xlabel(f"{AXIS_LABELS[axis]}; baseline {baseline[axis]} (gray line)")
        if skipped:
            bottom.text(0.98, 0.03, "skipped:\n" + "\n".join(skipped), transform=bottom.transAxes,
                        ha="right", va="bottom", fontsize=6.5, color="firebrick")
    grid[0, 0].set_ylabel("seconds per meta-step")
    grid[1, 0].set_ylabel("peak memory above the process baseline, MiB")
    figure.suptitle(f"{report['setting']}\n{report['threads']} CPU threads, torch {report['torch']}, "
                    f"{report['date']}", fontsize=10)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a reduced grid around meta-batch 4 (smoke run)")
    parser.add_argument("--json", help="write the results here (and the Markdown table next to it)")
    parser.add_argument("--plot", help="write the figure here (PNG)")
    parser.add_argument("--child", nargs=5, metavar=("METHOD", "TASKS", "WAYS", "INNER_STEPS", "IMAGE_SIZE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, *numbers = args.child
        print(json.dumps(measure(method, *map(int, numbers), args.threads, args.steps)))
        return
    baseline, grid = (QUICK_BASELINE, QUICK_GRID) if args.quick else (BASELINE, GRID)
    start = time.perf_counter()
    rows = sweep(args, baseline, grid)
    wall = time.perf_counter() - start
    print(f"total: {wall / 60:.1f} min", flush=True)
    import torch

    report = {
        "benchmark": "scaling", "quick": args.quick,
        "setting": (f"MAML on Conv-4 (64 channels, per-task batch norm), Omniglot-shaped {SHOTS}-shot tasks, "
                    f"{QUERIES} queries per class, inner SGD {INNER_LR}; one axis varied around meta-batch "
                    f"{baseline['meta_batch']}, {baseline['ways']}-way, {baseline['inner_steps']} inner step, "
                    f"{baseline['image_size']}x{baseline['image_size']}"),
        "baseline": baseline, "grid": grid, "shots": SHOTS, "queries_per_class": QUERIES, "inner_lr": INNER_LR,
        "limits": {"seconds_per_step": MAX_SECONDS, "peak_memory_mib": MAX_MIB},
        "threads": args.threads, "timed_steps": args.steps, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"), "wall_seconds": wall, "results": rows}
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as file:
            json.dump(report, file, indent=2)
            file.write("\n")
        path.with_suffix(".md").write_text(markdown(report))
        print(f"written: {path}, {path.with_suffix('.md')}")
    if args.plot:
        plot(report, args.plot)
        print(f"written: {args.plot}")


if __name__ == "__main__":
    main()
