"""A trained memory-augmented network's accuracy by presentation index, as Santoro et al. report it.

Each test episode has 5 classes with 10 instances each (1 support + 9 query examples per class
of the fixed, seeded test episodes), shuffled into one 50-step sequence whose labels arrive one
step late; the accuracy of the prediction at the i-th instance of a class is averaged over all
episodes. Published (Santoro et al. 2016, Omniglot, 5 classes): 36.4% (1st), 82.8% (2nd),
91.0% (3rd), 92.6% (4th), 94.9% (5th), 98.1% (10th instance).

    python -m benchmarks.mann_presentation runs/mann-5w1s [--episodes 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from innerloop.algorithms.model.mann import MemoryAugmentedNetwork, accuracy_by_presentation
from innerloop.build import build_learner, build_sampler, load_splits, set_threads
from innerloop.config import config_from_dict
from innerloop.evaluate.protocol import mean_and_ci95
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.train.checkpoint import BEST, load_checkpoint

INSTANCES = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    payload = load_checkpoint(Path(args.run_dir) / BEST)
    config = config_from_dict(payload["config"], ["num_threads=1"])
    set_threads(config)
    learner = build_learner(config)
    if not isinstance(learner, MemoryAugmentedNetwork):
        raise SystemExit(f"{args.run_dir} holds a {learner.name} run; this benchmark needs a mann run")
    learner.load_state_dict(payload["model"])
    split = load_splits(config, args.data_root, [config.data.test_split])[config.data.test_split]
    sampler = build_sampler(config, split, learner.ways, 1, INSTANCES - 1)
    episodes = FixedEpisodes(sampler, args.episodes, args.seed)
    per_episode = accuracy_by_presentation(learner, episodes.batches(50), seed=args.seed)  # [E, I]
    accuracy = per_episode.mean(0)
    intervals = {index: mean_and_ci95(per_episode[:, index - 1]) for index in (1, 2, 5, 10)}
    print(f"{learner.ways} classes x {INSTANCES} instances, {args.episodes} test episodes (seed {args.seed}), "
          f"checkpoint step {payload['step']}")
    print("| instance | " + " | ".join(str(i + 1) for i in range(len(accuracy))) + " |")
    print("| --- |" + " ---: |" * len(accuracy))
    print("| accuracy | " + " | ".join(f"{100 * float(a):.1f}%" for a in accuracy) + " |")
    for index, (mean, ci95) in intervals.items():
        print(f"instance {index}: {100 * mean:.2f}% ± {100 * ci95:.2f}% (95% CI over episodes)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"run": str(args.run_dir), "step": int(payload["step"]), "episodes": args.episodes,
                       "seed": args.seed, "accuracy_by_instance": [round(float(a), 5) for a in accuracy],
                       "ci95": {str(i): [round(m, 5), round(c, 5)] for i, (m, c) in intervals.items()}},
                      file)
            file.write("\n")


if __name__ == "__main__":
    main()
