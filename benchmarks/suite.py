"""The benchmark suite: speed and memory of every method, against references in the same run.

One entry point (``python -m benchmarks`` or ``innerloop bench``) prints tables and writes JSON
and Markdown. Setting: Omniglot-shaped tasks (1x28x28, random pixels: speed does not depend on
them), 5-way 1-shot, 15 queries per class, meta-batch 32, Conv-4 with 64 channels, each
method built as its 5-way 1-shot recipe builds it (``configs/omniglot``), ``--threads`` torch
threads (2 by default, ``OMP_WAIT_POLICY=PASSIVE`` recommended).

1. **Head to head** (one subprocess per comparison; the implementations take turns round by
   round, so a background load reaches all of them alike; the median round is reported):
   second-order MAML (1 inner step at 0.4) — innerloop, the plain per-task loop (what
   learn2learn does), ``higher`` and ``TorchOpt`` when installed; first-order MAML, ANIL and
   ProtoNets — innerloop and their plain loops. Every row also runs the plain training step on
   the same images (``benchmarks/references.py``). All start from the same weights (copied into
   the reference network) and see the same tasks, and a float64 run checks that every
   implementation's meta-gradient equals innerloop's (max abs difference relative to the
   gradient's scale). ProtoNet is the exception to "the same function": innerloop embeds the
   whole meta-batch in one call, so training-mode batch norm normalizes over all 32 tasks (its
   documented semantics), while the plain loop normalizes each task; their gradients are
   compared with batch norm on running statistics (evaluation mode), where both compute the
   same function, and the timing compares the two training-mode steps. The process keeps freed memory for reuse (``innerloop.allocator``, what
   innerloop's Trainer sets up), which speeds up every per-task loop, the references' too.
   Each implementation then also runs alone in a fresh subprocess **as shipped** — innerloop
   with its allocator setting, the others with the C library's default — for its peak resident
   memory (one warm-up and two steps) and its tasks/s over the same rounds.
2. **Every method**: meta-training tasks/s and peak memory, evaluation episodes/s (no autograd,
   the recipe's evaluation inner steps), and the ratio to the plain training step timed in the
   same subprocess.
3. **Sampler**: episodes/s of the tensor-store sampler against decoding each image from the
   archive (needs the real Omniglot archives; skipped with the reason otherwise).

    python -m benchmarks [--threads 2] [--rounds 3] [--methods maml protonet ...] [--skip-methods]
                         [--skip-sampler] [--data-root DIR] [--json benchmarks/results/suite.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TASKS, WAYS, SHOTS, QUERIES = 32, 5, 1, 15
ROOT = Path(__file__).resolve().parents[1]  # the checkout: subprocesses import benchmarks from here
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = ROOT / "configs" / "omniglot"

# name → (recipe, overrides, references it is compared with)
HEAD_TO_HEAD: dict[str, tuple[str, list[str], tuple[str, ...]]] = {
    "maml-second-order": ("maml", [], ("plain loop", "higher", "torchopt")),
    "maml-first-order": ("fomaml", [], ("plain loop", "higher")),
    "anil": ("anil", [], ("plain loop",)),
    "protonet": ("protonet", [], ("plain loop",)),
}


def random_episodes(dtype: Any = None, tasks: int = TASKS, seed: int = 0):
    """``tasks`` 5-way 1-shot Omniglot-shaped episodes with 15 queries per class."""
    import torch

    from innerloop.tasks.episodes import Episodes

    generator = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.float32
    return Episodes(
        support_x=torch.rand(tasks, WAYS * SHOTS, 1, 28, 28, generator=generator, dtype=dtype),
        support_y=torch.arange(WAYS).repeat_interleave(SHOTS).repeat(tasks, 1),
        query_x=torch.rand(tasks, WAYS * QUERIES, 1, 28, 28, generator=generator, dtype=dtype),
        query_y=torch.arange(WAYS).repeat_interleave(QUERIES).repeat(tasks, 1),
        ways=WAYS, shots=SHOTS, queries=QUERIES, class_ids=torch.zeros(tasks, WAYS, dtype=torch.int64))


def method_config(recipe: str, threads: int):
    """The 5-way 1-shot Omniglot recipe ``recipe`` (or the algorithm's defaults where there is no
    recipe) with the suite's task shape and thread count."""
    from innerloop.config import config_from_dict, load_config

    overrides = [f"train.ways={WAYS}", f"train.shots={SHOTS}", f"train.queries={QUERIES}",
                 f"train.meta_batch_size={TASKS}", f"eval.ways={WAYS}", f"eval.shots={SHOTS}",
                 f"eval.queries={QUERIES}", f"num_threads={threads}"]
    path = RECIPES / f"{recipe}-5w1s.yaml"
    if path.is_file():
        return load_config(path, overrides)
    return config_from_dict({"model": {"algorithm": recipe}}, overrides)


def all_methods() -> list[str]:
    """Every classification method, and Matching Networks with full-context embeddings."""
    from innerloop.algorithms import ALGORITHMS

    return sorted(name for name, cls in ALGORITHMS.items() if "classification" in cls.task_kinds) + ["matching-fce"]


def implementations(comparison: str, threads: int, dtype: Any = None) -> tuple[dict[str, Callable[[], None]], dict[str, Any]]:
    """The ``step()`` of innerloop and of each reference of ``comparison``, on shared weights and
    tasks, plus the modules whose ``.grad`` each step fills."""
    import torch

    from benchmarks import references as ref
    from innerloop.build import build_learner

    recipe, _, others = HEAD_TO_HEAD[comparison]
    config = method_config(recipe, threads)
    learner = build_learner(config)
    episodes = random_episodes(dtype)
    if dtype is not None:
        learner = learner.to(dtype)
    protonet = comparison == "protonet"
    standard = ref.standard_conv4(WAYS)
    if protonet:  # the embedding only: Conv-4 without its head, running statistics like ours
        standard = ref.standard_conv4(WAYS, running_statistics=True)[:-1]
    standard = standard.to(dtype or torch.float32)
    ref.copy_weights(learner, standard)

    def ours() -> None:
        learner.zero_grad(set_to_none=True)
        loss, _ = learner.meta_loss(episodes)
        loss.backward()

    steps: dict[str, Callable[[], None]] = {"innerloop": ours}
    modules: dict[str, Any] = {"innerloop": learner}
    inner = config.inner
    for name in others:
        if name == "plain loop":
            if protonet:
                steps[name] = ref.plain_protonet_loop(standard, episodes)
            elif comparison == "anil":
                steps[name] = ref.plain_anil_loop(standard, episodes, inner.lr, inner.steps)
            else:
                steps[name] = ref.plain_maml_loop(standard, episodes, inner.lr, inner.steps, inner.order)
        elif name in ref.peers():
            factory = ref.higher_maml if name == "higher" else ref.torchopt_maml
            options = (inner.order,) if name == "higher" else ()
            steps[name] = factory(standard, episodes, inner.lr, inner.steps, *options)
        modules[name] = standard
    if dtype is None:  # the yardstick is a speed reference only
        yardstick = ref.standard_conv4(WAYS)
        steps["plain training step"] = ref.plain_training_step(yardstick, episodes)
        modules["plain training step"] = yardstick
    return steps, modules


def interleaved_seconds(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per step of each implementation; they take turns in every round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for name, step in steps.items():
        step()  # warm-up
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def gradient_agreement(comparison: str, threads: int) -> dict[str, float]:
    """Max |g_ref - g_innerloop| / max |g_innerloop| of every reference, in float64."""
    import torch

    from benchmarks.references import gradients

    steps, modules = implementations(comparison, threads, dtype=torch.float64)
    if comparison == "protonet":  # running statistics: a per-task loop computes the same function
        for module in modules.values():
            module.eval()
    results: dict[str, list[torch.Tensor]] = {}
    for name, step in steps.items():
        step()
        results[name] = gradients(modules[name])
    ours = results.pop("innerloop")
    scale = max(float(g.abs().max()) for g in ours)
    return {name: max(float((a - b).abs().max()) for a, b in zip(grads, ours, strict=True)) / scale
            for name, grads in results.items()}


def peak_memory_mib(run: Callable[[], None]) -> float:
    """Peak resident memory above the process's level before ``run`` (MiB)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def child(kind: str, name: str, threads: int, rounds: int) -> dict[str, Any]:
    """What one subprocess measures (see the module docstring)."""
    import torch

    from innerloop.allocator import keep_freed_memory

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if kind == "compare":
        keep_freed_memory()
        steps, _ = implementations(name, threads)
        seconds = interleaved_seconds(steps, rounds)
        return {"seconds_per_step": seconds, "gradient_difference": gradient_agreement(name, threads)}
    if kind == "alone":
        comparison, implementation = name.split(":", 1)
        if implementation == "innerloop":
            keep_freed_memory()
        steps, _ = implementations(comparison, threads)
        step = steps[implementation]
        memory = peak_memory_mib(lambda: (step(), step()))
        return {"peak_memory_mib": memory, "seconds_per_step": interleaved_seconds({"alone": step}, rounds)["alone"]}
    keep_freed_memory()
    return measure_method(name, threads, rounds)


def measure_method(method: str, threads: int, rounds: int) -> dict[str, Any]:
    """Meta-training tasks/s and memory, evaluation episodes/s, and the plain step's tasks/s."""
    import torch

    from benchmarks import references as ref
    from innerloop.build import build_learner

    learner = build_learner(method_config(method, threads))
    episodes = random_episodes()

    def train_step() -> None:
        learner.zero_grad(set_to_none=True)
        loss, _ = learner.meta_loss(episodes)
        loss.backward()

    learner.train()
    memory = peak_memory_mib(lambda: (train_step(), train_step()))
    yardstick = ref.plain_training_step(ref.standard_conv4(WAYS), episodes)
    seconds = interleaved_seconds({"method": train_step, "plain training step": yardstick}, rounds)
    learner.eval()

    def evaluate() -> None:
        with torch.no_grad():
            learner.episode_metric(episodes)

    evaluation = interleaved_seconds({"evaluate": evaluate}, rounds)["evaluate"]
    return {"method": method, "train_tasks_per_s": TASKS / seconds["method"], "peak_memory_mib": memory,
            "eval_episodes_per_s": TASKS / evaluation,
            "plain_step_tasks_per_s": TASKS / seconds["plain training step"],
            "vs_plain_step": seconds["plain training step"] / seconds["method"]}


def in_subprocess(kind: str, name: str, threads: int, rounds: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.suite", "--child", kind, name, "--threads", str(threads),
               "--rounds", str(rounds)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        message = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": message}
    return json.loads(done.stdout.strip().splitlines()[-1])


def head_to_head(threads: int, rounds: int, comparisons: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.references import peers

    installed = set(peers())
    results = {}
    for comparison, (_, _, others) in HEAD_TO_HEAD.items():
        if comparisons and comparison not in comparisons:
            continue
        missing = [name for name in others if name not in ("plain loop",) and name not in installed]
        result = in_subprocess("compare", comparison, threads, rounds)
        if "error" not in result:
            names = list(result["seconds_per_step"])
            result["tasks_per_s"] = {n: TASKS / s for n, s in result["seconds_per_step"].items()}
            result["innerloop_speedup"] = {n: result["seconds_per_step"][n] / result["seconds_per_step"]["innerloop"]
                                           for n in names if n != "innerloop"}
            alone = {n: in_subprocess("alone", f"{comparison}:{n}", threads, rounds) for n in names}
            result["peak_memory_mib"] = {n: alone[n].get("peak_memory_mib") for n in names}
            result["as_shipped_tasks_per_s"] = {n: TASKS / alone[n]["seconds_per_step"] for n in names
                                                if "seconds_per_step" in alone[n]}
        result["peers_not_installed"] = missing
        results[comparison] = result
        print(format_comparison(comparison, result), flush=True)
    return results


def format_comparison(comparison: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{comparison}: failed: {result['error']}"
    lines = [f"{comparison}:"]
    for name, rate in result["tasks_per_s"].items():
        speedup = result["innerloop_speedup"].get(name)
        difference = result["gradient_difference"].get(name)
        memory = result["peak_memory_mib"].get(name)
        shipped = result["as_shipped_tasks_per_s"].get(name)
        parts = [f"  {name:20s} {rate:7.1f} tasks/s", f"{memory:7.0f} MiB" if memory is not None else "   ? MiB",
                 f"as shipped {shipped:6.1f} tasks/s" if shipped is not None else "as shipped ?"]
        if speedup is not None:
            parts.append(f"innerloop {speedup:5.2f}x faster")
        if difference is not None:
            parts.append(f"float64 gradient difference {difference:.1e}")
        lines.append(" | ".join(parts))
    if result["peers_not_installed"]:
        lines.append(f"  not installed: {', '.join(result['peers_not_installed'])} (pip install -e '.[bench]')")
    return "\n".join(lines)


def every_method(methods: list[str], threads: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for method in methods:
        row = {"method": method} | in_subprocess("method", method, threads, rounds)
        rows.append(row)
        if "error" in row:
            print(f"{method:14s} failed: {row['error']}", flush=True)
        else:
            print(f"{method:14s} train {row['train_tasks_per_s']:7.1f} tasks/s ({row['vs_plain_step']:5.2f}x the "
                  f"plain step) {row['peak_memory_mib']:7.0f} MiB | eval {row['eval_episodes_per_s']:7.1f} "
                  f"episodes/s", flush=True)
    return rows


def sampler(data_root: str | None) -> dict[str, Any]:
    from benchmarks.sampler_speed import measure
    from innerloop.errors import InnerloopError

    try:
        result = measure(data_root, batches=10)
    except (InnerloopError, FileNotFoundError) as error:
        result = {"skipped": str(error)}
    print("sampler: " + json.dumps(result), flush=True)
    return result


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# innerloop benchmark suite ({report['date']}, {report['threads']} threads, torch {report['torch']}, "
             f"OMP_WAIT_POLICY={report.get('omp_wait_policy', '?')})", ""]
    lines += ["## Head to head (tasks/s; ratio = how many times faster innerloop is)", "",
              "| comparison | implementation | tasks/s, same process | innerloop speedup | tasks/s as shipped "
              "| innerloop speedup as shipped | peak MiB | float64 gradient difference |",
              "|---|---|---|---|---|---|---|---|"]
    for comparison, result in report["head_to_head"].items():
        if "error" in result:
            lines.append(f"| {comparison} | failed: {result['error']} | | | | | | |")
            continue
        shipped = result["as_shipped_tasks_per_s"]
        for name, rate in result["tasks_per_s"].items():
            speedup = result["innerloop_speedup"].get(name)
            difference = result["gradient_difference"].get(name)
            memory = result["peak_memory_mib"].get(name)
            alone = shipped.get(name)
            alone_speedup = shipped.get("innerloop", 0) / alone if alone and name != "innerloop" else None
            lines.append(f"| {comparison} | {name} | {rate:.1f} | {f'{speedup:.2f}x' if speedup else '—'} | "
                         f"{f'{alone:.1f}' if alone else '?'} | {f'{alone_speedup:.2f}x' if alone_speedup else '—'} | "
                         f"{f'{memory:.0f}' if memory is not None else '?'} | "
                         f"{f'{difference:.1e}' if difference is not None else '—'} |")
    if report.get("methods"):
        lines += ["", "## Every method", "",
                  "| method | meta-training tasks/s | × plain training step | peak MiB | evaluation episodes/s |",
                  "|---|---|---|---|---|"]
        for row in report["methods"]:
            if "error" in row:
                lines.append(f"| {row['method']} | failed: {row['error']} | | | |")
            else:
                lines.append(f"| {row['method']} | {row['train_tasks_per_s']:.1f} | {row['vs_plain_step']:.2f} | "
                             f"{row['peak_memory_mib']:.0f} | {row['eval_episodes_per_s']:.1f} |")
    if report.get("sampler"):
        sampled = report["sampler"]
        lines += ["", "## Sampler", ""]
        if "skipped" in sampled:
            lines.append(f"skipped: {sampled['skipped']}")
        else:
            lines.append(f"{sampled['innerloop_episodes_per_s']:.0f} episodes/s vs "
                         f"{sampled['per_image_decoding_episodes_per_s']:.0f} decoding each image: "
                         f"**{sampled['speedup']:.0f}x**")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per implementation")
    parser.add_argument("--methods", nargs="*", help="methods of the every-method table (default: all)")
    parser.add_argument("--skip-methods", action="store_true")
    parser.add_argument("--skip-head-to-head", action="store_true")
    parser.add_argument("--comparisons", nargs="*", choices=list(HEAD_TO_HEAD),
                        help="head-to-head comparisons to run (default: all)")
    parser.add_argument("--skip-sampler", action="store_true")
    parser.add_argument("--data-root", help="Omniglot for the sampler benchmark (default: INNERLOOP_DATA)")
    parser.add_argument("--json", default=str(RESULTS / "suite.json"), help="the JSON report (.md next to it)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.threads, args.rounds)))
        return
    import torch

    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "suite", "setting": f"{TASKS} tasks, {WAYS}-way {SHOTS}-shot, {QUERIES} queries per class, "
                                          "Conv-4 (64 channels), 1x28x28",
        "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
    if not args.skip_head_to_head:
        report["head_to_head"] = head_to_head(args.threads, args.rounds, args.comparisons)
    else:
        report["head_to_head"] = {}
    if not args.skip_methods:
        report["methods"] = every_method(args.methods or all_methods(), args.threads, args.rounds)
    if not args.skip_sampler:
        report["sampler"] = sampler(args.data_root)
    report["seconds"] = time.perf_counter() - started
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(report))
    print(f"written: {path} and {path.with_suffix('.md')} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
