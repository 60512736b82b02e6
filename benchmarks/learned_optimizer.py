"""The LSTM optimizer of Andrychowicz et al. (2016) against SGD and Adam, on its own problem families.

Two families (:mod:`innerloop.tasks.optimizees`): random 10-dimensional quadratics
``||W theta - y||^2`` and a small MLP (784 -> 20 sigmoid -> 10) trained on minibatches of 64 from
a 10-way Omniglot episode of 200 images (classes of the ``train`` split for meta-training, of
the ``test`` split for the held-out problems). For each family: meta-train the LSTM optimizer
(2 layers of 20, preprocessed gradients, truncated backpropagation every 20 of 100 steps, Adam
on its weights), pick SGD's and Adam's learning rates from a grid by the mean final loss on
validation problems (a separate seed), then run all three for 100 steps on held-out problems
and report the mean loss curve. Writes a PNG with both families and a JSON of the curves.

    python -m benchmarks.learned_optimizer [--threads 2] [--meta-steps 300 200]
        [--out docs/learned_optimizer.png] [--json benchmarks/results/learned_optimizer.json]

Needs Omniglot (``INNERLOOP_DATA`` or the user cache) for the MLP family.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from innerloop.algorithms.optimization.lstm_optimizer import LSTMOptimizer
from innerloop.build import load_splits
from innerloop.config import config_from_dict
from innerloop.functional import SGD, Adam
from innerloop.tasks.optimizees import ClassifierProblems, QuadraticProblems
from innerloop.tasks.sampler import EpisodeSampler
from innerloop.train.learned_optimizer import meta_train_optimizer, optimize

STEPS = 100
GRIDS = {"sgd": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0), "adam": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)}
BASELINES = {"sgd": SGD, "adam": Adam}


def mean_curve(problems, optimizer) -> list[float]:
    curves = torch.tensor([optimize(problem, optimizer, STEPS) for problem in problems], dtype=torch.float64)
    return curves.mean(dim=0).tolist()


def compare(name: str, families: dict, meta_steps: int, problems: int, seed: int) -> dict:
    """Meta-train on ``families['train']``; tune baselines on 'val'; curves on 'test' problems."""
    torch.manual_seed(seed)
    learned = LSTMOptimizer()
    start = time.perf_counter()
    history = meta_train_optimizer(learned, families["train"].sample, meta_steps, unroll=STEPS,
                                   truncation=20, lr=3e-3, seed=seed, log_every=50)
    training_seconds = time.perf_counter() - start
    validation = [families["val"].sample(torch.Generator().manual_seed(10_000 + i)) for i in range(problems)]
    test = [families["test"].sample(torch.Generator().manual_seed(20_000 + i)) for i in range(problems)]
    curves = {"lstm": {"lr": None, "curve": mean_curve(test, learned)}}
    for baseline, grid in GRIDS.items():
        finals = {lr: mean_curve(validation, BASELINES[baseline](lr))[-1] for lr in grid}
        best = min(finals, key=lambda lr: finals[lr] if finals[lr] == finals[lr] else float("inf"))
        curves[baseline] = {"lr": best, "curve": mean_curve(test, BASELINES[baseline](best))}
    for key, value in curves.items():
        lr = f" (lr {value['lr']:g})" if value["lr"] else ""
        print(f"{name}: {key}{lr}: loss {value['curve'][0]:.3f} -> {value['curve'][20]:.3f} (20 steps) "
              f"-> {value['curve'][-1]:.4f} ({STEPS} steps)", flush=True)
    return {"family": name, "meta_steps": meta_steps, "meta_training_seconds": training_seconds,
            "meta_loss_every_10_problems": [round(value, 5) for value in history[::10]],
            "test_problems": problems,
            "curves": {key: {**value, "curve": [float(f"{x:.6g}") for x in value["curve"]]}
                       for key, value in curves.items()}}


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4))
    for axis, result in zip(axes if len(results) > 1 else [axes], results):
        for key, value in result["curves"].items():
            label = "LSTM (learned)" if key == "lstm" else f"{key.upper() if key == 'sgd' else 'Adam'} (lr {value['lr']:g})"
            axis.plot(range(STEPS + 1), value["curve"], label=label)
        axis.set_yscale("log")
        axis.set_xlabel("optimization step")
        axis.set_ylabel(f"mean loss over {result['test_problems']} held-out problems")
        axis.set_title(result["family"])
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--meta-steps", type=int, nargs=2, default=[300, 200], metavar=("QUADRATIC", "MLP"))
    parser.add_argument("--problems", type=int, default=50)
    parser.add_argument("--data-root")
    parser.add_argument("--out", default="docs/learned_optimizer.png")
    parser.add_argument("--json", default="benchmarks/results/learned_optimizer.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    quadratic = QuadraticProblems()
    results = [compare("10-d quadratics", {"train": quadratic, "val": quadratic, "test": quadratic},
                       args.meta_steps[0], args.problems, seed=0)]
    config = config_from_dict({"data": {"dataset": "omniglot", "rotations": [0]}})
    splits = load_splits(config, args.data_root, ["train", "val", "test"])
    mlp = {name: ClassifierProblems(EpisodeSampler(splits[name], 10, 10, 10)) for name in splits}
    results.append(compare("MLP on 10-way Omniglot (held-out classes)", mlp, args.meta_steps[1],
                           args.problems, seed=1))
    plot(results, args.out)
    with open(args.json, "w") as file:
        json.dump({"benchmark": "learned_optimizer", "threads": args.threads, "torch": torch.__version__,
                   "date": time.strftime("%Y-%m-%d"), "steps": STEPS, "results": results}, file)
        file.write("\n")
    print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
