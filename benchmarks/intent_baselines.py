"""Nearest-prototype accuracy on frozen all-MiniLM-L6-v2 embeddings: the bar a meta-learned text
classifier has to clear.

For each intent dataset (CLINC150 with its in-domain and cross-domain class splits, BANKING77,
HWU64): the meta-test intents of :func:`innerloop.data.intents.intent_class_split`, 600 seeded
5-way episodes with 15 queries per class at 1 and 5 shots, each query assigned to the nearest
class mean of its support embeddings (squared Euclidean; no training at all). Mean accuracy
± the 95% interval over episodes. Embeddings are computed once per dataset and cached.

    python -m benchmarks.intent_baselines [--data-root DIR] [--json benchmarks/results/intent_baselines.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from innerloop.data.intents import intent_class_split, intent_store
from innerloop.evaluate.protocol import mean_and_ci95
from innerloop.tasks import EpisodeSampler

SETTINGS = (("clinc150", "classes"), ("clinc150", "groups"), ("banking77", "classes"), ("hwu64", "classes"))
EPISODES, WAYS, QUERIES = 600, 5, 15


def nearest_prototype_accuracy(sampler: EpisodeSampler, shots: int) -> torch.Tensor:
    """Per-episode accuracy (float64 ``[EPISODES]``) of the nearest support mean."""
    episodes = sampler.sample(EPISODES, torch.Generator().manual_seed(0))
    prototypes = episodes.support_x.view(EPISODES, WAYS, shots, -1).mean(2)
    distances = (episodes.query_x.unsqueeze(2) - prototypes.unsqueeze(1)).pow(2).sum(-1)
    return (distances.argmin(-1) == episodes.query_y).double().mean(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for dataset, scheme in SETTINGS:
        store = intent_store(dataset, args.data_root)
        split = intent_class_split(store, "test", scheme)
        for shots in (1, 5):
            mean, ci95 = mean_and_ci95(nearest_prototype_accuracy(EpisodeSampler(split, WAYS, shots, QUERIES), shots))
            rows.append({"dataset": dataset, "split": "cross-domain" if scheme == "groups" else "in-domain",
                         "test_intents": split.num_classes, "shots": shots, "accuracy": mean, "ci95": ci95})
            print(f"{dataset:10s} {rows[-1]['split']:12s} {split.num_classes:3d} test intents, 5-way {shots}-shot: "
                  f"{100 * mean:.2f}% ± {100 * ci95:.2f}%", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"benchmark": "intent_baselines", "episodes": EPISODES, "queries_per_class": QUERIES,
                       "encoder": "all-MiniLM-L6-v2 (frozen)", "date": time.strftime("%Y-%m-%d"),
                       "results": rows}, file, indent=2)
            file.write("\n")


if __name__ == "__main__":
    main()
