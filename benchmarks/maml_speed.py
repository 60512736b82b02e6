"""Meta-training speed and peak memory of MAML: the per-task loop vs ``torch.func.vmap``.

Conv-4 (64 channels, per-task batch norm), Omniglot-shaped 5-way 1-shot tasks with 15 queries per
class, meta-batch 32; second and first order; 1 and 5 inner SGD steps. Also the sinusoid setting
(MLP(40, 40), 25 tasks of 10 support and 10 query points, one second-order step), where the
per-task overhead dominates. Each configuration runs in
a fresh subprocess (so its peak resident memory is its own): one warm-up step, then ``--steps``
timed steps of ``meta_loss`` + ``backward``. Reported: meta-training steps/s, tasks/s, the peak
resident memory above the process's baseline, and for each configuration the ratio vmap / loop
measured in the same run. The inputs are random images (speed does not depend on the pixels).

    python -m benchmarks.maml_speed [--threads 2] [--steps 3] [--json benchmarks/results/maml_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

TASKS, WAYS, SHOTS, QUERIES = 32, 5, 1, 15


def sinusoid_setup(vectorize: bool):
    import torch

    from innerloop.algorithms import MAML
    from innerloop.nn import MLP
    from innerloop.tasks.episodes import Episodes

    learner = MAML(MLP(1, (40, 40)), 1, task="regression", inner_steps=1, inner_lr=0.01,
                   vectorize=vectorize)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(25, 20, 1, generator=generator) * 10 - 5
    y = 3 * torch.sin(x - 1)
    episodes = Episodes(x[:, :10], y[:, :10], x[:, 10:], y[:, 10:], 1, 10, 10,
                        torch.zeros(25, 1, dtype=torch.int64))
    return learner, episodes


def measure(order: str, inner_steps: int, vectorize: bool, threads: int, steps: int,
            model: str = "conv4") -> dict:
    """Run in the child process: time ``steps`` meta-training steps, report peak memory."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if model == "mlp":
        learner, episodes = sinusoid_setup(vectorize)
        steps *= 20  # milliseconds per step: time more of them
    else:
        learner, episodes = conv4_setup(order, inner_steps, vectorize)
    return timed(learner, episodes, steps, baseline_kib) | {
        "model": model, "order": order, "inner_steps": inner_steps,
        "path": "vmap" if vectorize else "loop", "tasks": episodes.num_tasks}


def conv4_episodes(tasks: int = TASKS):
    """``tasks`` Omniglot-shaped 5-way 1-shot tasks (28x28, 15 queries per class), random pixels."""
    import torch

    from innerloop.tasks.episodes import Episodes

    generator = torch.Generator().manual_seed(0)
    return Episodes(
        support_x=torch.rand(tasks, WAYS * SHOTS, 1, 28, 28, generator=generator),
        support_y=torch.arange(WAYS).repeat_interleave(SHOTS).repeat(tasks, 1),
        query_x=torch.rand(tasks, WAYS * QUERIES, 1, 28, 28, generator=generator),
        query_y=torch.arange(WAYS).repeat_interleave(QUERIES).repeat(tasks, 1),
        ways=WAYS, shots=SHOTS, queries=QUERIES, class_ids=torch.zeros(tasks, WAYS, dtype=torch.int64))


def conv4_setup(order: str, inner_steps: int, vectorize: bool):
    from innerloop.algorithms import MAML
    from innerloop.nn import Conv4

    learner = MAML(Conv4(batch_norm="task"), WAYS, inner_steps=inner_steps, inner_lr=0.4,
                   order=order, vectorize=vectorize)
    return learner, conv4_episodes()


def timed(learner, episodes, steps: int, baseline_kib: int) -> dict:
    def step() -> None:
        learner.zero_grad(set_to_none=True)
        loss, _ = learner.meta_loss(episodes)
        loss.backward()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds_per_step": seconds, "steps_per_s": 1 / seconds,
            "tasks_per_s": episodes.num_tasks / seconds, "peak_memory_mib": (peak_kib - baseline_kib) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "ORDER", "INNER_STEPS", "VECTORIZE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, order, inner_steps, vectorize = args.child
        print(json.dumps(measure(order, int(inner_steps), vectorize == "1", args.threads, args.steps, model)))
        return
    rows = []
    settings = [("conv4", order, steps) for order in ("second", "first") for steps in (1, 5)]
    for model, order, inner_steps in settings + [("mlp", "second", 1)]:
        pair = {}
        for vectorize in ("0", "1"):
            output = subprocess.run(
                [sys.executable, "-m", "benchmarks.maml_speed", "--threads", str(args.threads),
                 "--steps", str(args.steps), "--child", model, order, str(inner_steps), vectorize],
                check=True, capture_output=True, text=True).stdout
            pair[vectorize] = json.loads(output.strip().splitlines()[-1])
        loop, vmapped = pair["0"], pair["1"]
        vmapped["speed_vs_loop"] = vmapped["steps_per_s"] / loop["steps_per_s"]
        vmapped["memory_vs_loop"] = vmapped["peak_memory_mib"] / max(loop["peak_memory_mib"], 1e-9)
        rows += [loop, vmapped]
        print(f"{model:5s} {order:6s} order, {inner_steps} inner step(s): loop {loop['tasks_per_s']:6.1f} tasks/s "
              f"{loop['peak_memory_mib']:7.0f} MiB | vmap {vmapped['tasks_per_s']:6.1f} tasks/s "
              f"{vmapped['peak_memory_mib']:7.0f} MiB | vmap/loop speed {vmapped['speed_vs_loop']:.2f}x, "
              f"memory {vmapped['memory_vs_loop']:.2f}x", flush=True)
    if args.json:
        import torch

        with open(args.json, "w") as file:
            json.dump({"benchmark": "maml_speed", "tasks": TASKS, "ways": WAYS, "shots": SHOTS,
                       "queries_per_class": QUERIES, "threads": args.threads, "timed_steps": args.steps,
                       "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                       "date": time.strftime("%Y-%m-%d"), "results": rows}, file, indent=2)
            file.write("\n")


if __name__ == "__main__":
    main()
