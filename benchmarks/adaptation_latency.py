"""Adaptation latency per task for every method in the library, as ratios to Prototypical Networks.

For each method: build it as its 5-way 1-shot recipe does (Conv-4 on 28x28 Omniglot, one thread),
put it in evaluation mode and time ``predict(adapt(support), queries)`` — one 5-way 1-shot
support set to the logits of its 75 queries — on real Omniglot test episodes. The same episodes
serve every method, and the methods take turns on each task (a changing background load reaches
all of them alike). Gradient-based methods take their recipe's evaluation inner steps (first
order, as in evaluation). Weights are as initialised: latency does not depend on training.

    python -m benchmarks.adaptation_latency [--data-root DIR] [--tasks 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from innerloop.algorithms import ALGORITHMS
from innerloop.build import build_learner
from innerloop.config import Config, config_from_dict, load_config
from innerloop.data.omniglot import load_omniglot, omniglot_split
from innerloop.tasks import EpisodeSampler, Episodes

WAYS, SHOTS, QUERIES = 5, 1, 15
RECIPES = Path(__file__).resolve().parents[1] / "configs" / "omniglot"


def method_configs() -> dict[str, Config]:
    """Every classification algorithm as its 5-way 1-shot recipe builds it (defaults where it
    has none), plus Matching Networks with full-context embeddings."""
    configs = {}
    classifiers = [name for name, cls in ALGORITHMS.items() if "classification" in cls.task_kinds]
    for name in [*classifiers, "matching-fce"]:
        recipe = RECIPES / f"{name}-5w1s.yaml"
        overrides = ["train.ways=5", "eval.ways=5", "num_threads=1"]
        if recipe.is_file():
            configs[name] = load_config(recipe, overrides)
        else:
            configs[name] = config_from_dict({"model": {"algorithm": name}}, overrides)
    return configs


def time_methods(configs: dict[str, Config], episodes: Episodes, repeats: int) -> dict[str, tuple[float, str, bool]]:
    """Median seconds per task of every method. The methods take turns on each task, so a load
    that changes during the run (other processes) reaches all of them alike."""
    learners = {name: build_learner(config).eval() for name, config in configs.items()}
    times: dict[str, list[float]] = {name: [] for name in learners}
    with torch.no_grad():
        for repeat in range(repeats + 1):
            for t in range(episodes.num_tasks):
                episode = episodes[t]
                for name, learner in learners.items():
                    start = time.perf_counter()
                    learner.predict(learner.adapt(episode.support_x, episode.support_y, WAYS), episode.query_x)
                    if repeat:  # the first round warms up
                        times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), learner.adaptation_cost(), learner.transductive)
            for name, learner in learners.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = load_omniglot(args.data_root, download=False)
    sampler = EpisodeSampler(omniglot_split(store, "test"), WAYS, SHOTS, QUERIES)
    episodes = sampler.sample(args.tasks, torch.Generator().manual_seed(0))
    rows = time_methods(method_configs(), episodes, args.repeats)
    reference = rows["protonet"][0]
    print(f"| method | ms per task (support → 75 query predictions) | × ProtoNet | transductive | adaptation |")
    print("| --- | ---: | ---: | --- | --- |")
    for name, (seconds, cost, transductive) in sorted(rows.items(), key=lambda item: item[1][0]):
        print(f"| {name} | {1000 * seconds:.2f} | {seconds / reference:.2f} | {'yes' if transductive else 'no'} | {cost} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"setting": f"{WAYS}-way {SHOTS}-shot, {WAYS * QUERIES} queries, one thread, median of "
                                  f"{args.tasks} tasks x {args.repeats} rounds",
                       "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                       "seconds_per_task": {n: r[0] for n, r in rows.items()},
                       "ratio_to_protonet": {n: round(r[0] / reference, 3) for n, r in rows.items()},
                       "adaptation": {n: r[1] for n, r in rows.items()},
                       "transductive": {n: r[2] for n, r in rows.items()}}, file, indent=1)
            file.write("\n")


if __name__ == "__main__":
    main()
