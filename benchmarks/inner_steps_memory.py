"""Peak memory and time per meta-step against the number of inner steps.

MAML (second order), MAML with checkpointed inner steps (``checkpoint=True``), first-order MAML
and iMAML on Conv-4 (64 channels, per-task batch norm)
and Omniglot-shaped 5-way 1-shot tasks with 15 queries per class (random pixels: neither time
nor memory depends on them), ``--tasks`` tasks per meta-batch, inner SGD at 0.1, for 1, 5, 10,
20 and 50 inner steps. iMAML uses proximal strength 2 and 5 conjugate-gradient steps.

Each configuration runs in a fresh subprocess, so its peak resident memory is its own: one
warm-up step, then ``--steps`` timed steps of ``meta_loss`` + ``backward``. Reported: seconds
per meta-step and the peak resident memory above the process's baseline; for each step count,
each method's memory and time as a ratio to first-order MAML measured in the same run.

    python -m benchmarks.inner_steps_memory [--threads 2] [--tasks 4] [--steps 2] [--json benchmarks/results/inner_steps_memory.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

from benchmarks.maml_speed import WAYS, conv4_episodes, timed

METHODS = ("maml", "maml-checkpoint", "fomaml", "imaml")
INNER_STEPS = (1, 5, 10, 20, 50)


def build(method: str, inner_steps: int):
    from innerloop.algorithms import MAML, iMAML
    from innerloop.nn import Conv4

    common = {"inner_steps": inner_steps, "inner_lr": 0.1}
    if method == "imaml":
        return iMAML(Conv4(batch_norm="task"), WAYS, proximal_strength=2.0, cg_steps=5, **common)
    order = "first" if method == "fomaml" else "second"
    return MAML(Conv4(batch_norm="task"), WAYS, order=order, checkpoint=method == "maml-checkpoint", **common)


def measure(method: str, inner_steps: int, threads: int, steps: int, tasks: int) -> dict:
    """Run in the child process."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    learner, episodes = build(method, inner_steps), conv4_episodes(tasks)
    return timed(learner, episodes, steps, baseline_kib) | {"method": method, "inner_steps": inner_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--inner-steps", type=int, nargs="+", default=list(INNER_STEPS))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "INNER_STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, inner_steps = args.child
        print(json.dumps(measure(method, int(inner_steps), args.threads, args.steps, args.tasks)))
        return
    rows = []
    print(f"{'inner steps':>11} | " + " | ".join(f"{m:>22}" for m in METHODS), flush=True)
    for inner_steps in args.inner_steps:
        line = {}
        for method in METHODS:
            output = subprocess.run(
                [sys.executable, "-m", "benchmarks.inner_steps_memory", "--threads", str(args.threads),
                 "--steps", str(args.steps), "--tasks", str(args.tasks), "--child", method, str(inner_steps)],
                check=True, capture_output=True, text=True).stdout
            line[method] = json.loads(output.strip().splitlines()[-1])
        reference = line["fomaml"]
        for row in line.values():
            row["memory_vs_fomaml"] = row["peak_memory_mib"] / max(reference["peak_memory_mib"], 1e-9)
            row["time_vs_fomaml"] = row["seconds_per_step"] / reference["seconds_per_step"]
            rows.append(row)
        print(f"{inner_steps:>11} | " + " | ".join(
            f"{line[m]['peak_memory_mib']:6.0f} MiB {line[m]['seconds_per_step']:7.2f} s" for m in METHODS),
            flush=True)
    if args.json:
        import torch

        with open(args.json, "w") as file:
            json.dump({"benchmark": "inner_steps_memory", "tasks": args.tasks, "ways": WAYS, "shots": 1,
                       "queries_per_class": 15, "threads": args.threads, "timed_steps": args.steps,
                       "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                       "date": time.strftime("%Y-%m-%d"), "results": rows}, file, indent=2)
            file.write("\n")


if __name__ == "__main__":
    main()
