"""Warm-starting hyperparameter search from similar datasets: evaluations needed to reach a score.

Leave-one-dataset-out over the offline collection (:func:`innerloop.automl.dataset_collection`:
scikit-learn's four bundled classification datasets and ``--synthetic`` seeded synthetic ones).
Every configuration of a fixed pool (:func:`innerloop.automl.configuration_pool`, five model
families) is evaluated once on every dataset (fit on its train split, accuracy on its validation
split) and cached under ``--cache-dir``; a search on a target dataset is then an order over the
pool, scored by looking the target's row up. For each target, the other datasets are the
meta-training datasets, and each method orders the pool:

* **random search**: a seeded permutation of the pool;
* **warm start**: the best configurations of the ``--neighbours`` nearest meta-training datasets
  in standardised meta-feature distance (:class:`innerloop.automl.WarmStartSearch`), then random
  search over the rest;
* **global best**: the ``--neighbours`` configurations with the highest mean score over the
  meta-training datasets (the same for every target), then random search over the rest;
* **warm start + similarity search**: the warm-start configurations, then, instead of random
  search, the configuration predicted best by the ``--neighbours`` meta-training datasets whose
  scores correlate best with the target's scores so far
  (:func:`innerloop.automl.similarity_search.similarity_search`; deterministic, so its seeds agree).

With ``--leave-family-out``, a synthetic target's meta-training datasets also lose every dataset
from its generator family (``make_classification``, moons, circles, Gaussian quantiles, blobs:
:func:`generator_family`), so no prior can lean on a sibling drawn from the same generator; a
bundled dataset is its own family, so for it the protocol is leave-one-dataset-out as before.
Results then go to ``automl_warm_start_leave_family_out.{json,md}`` and no plot is drawn unless
``--plot`` is given.

The meta-features (:mod:`innerloop.automl.meta_features`) read only each dataset's train split;
their landmarkers are cross-validated within it, so the warm start never sees the validation
scores it is judged on.

The random continuation uses the same seeds for all methods (``--seeds`` of them per target).
A method's cost on a target is the number of evaluations until its best score so far is within
``tolerance`` (absolute accuracy) of the best score in the pool on that target; every method
evaluates the whole pool eventually, so the count is always defined. The table gives, per method,
the mean over seeds per target, then the mean ± 95% CI (normal approximation,
:func:`innerloop.evaluate.protocol.mean_and_ci95`) and the median over targets; the speed-up of a
method over random search is ``random's mean evaluations / the method's`` per target, summarised
the same way. The regret curve (best in pool minus best so far, mean over seeds then targets) is
plotted with its 95% band.

    python -m benchmarks.automl_warm_start [--synthetic 56] [--pool-size 150] [--seeds 20]
        [--neighbours 5] [--tolerances 0.01,0.005] [--table] [--plot docs/automl-warm-start-regret.png]
        [--leave-family-out] [--cache-dir runs/automl/fresh]

One thread (``threadpoolctl``); the first run builds the cache (9,000 evaluations and the
meta-features: 363 s wall, 186 s CPU on a shared 2-core machine, 2026-11-30), later runs read it and
take about 20 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from innerloop.automl import (
    MetaKnowledge,
    TabularDataset,
    configuration_pool,
    dataset_collection,
    evaluate_configuration,
    evaluations_to_reach,
    global_best_configurations,
    load_or_build_knowledge,
    meta_features,
    nearest_datasets,
    random_search_order,
    regret_curve,
    search_order,
    warm_start_configurations,
)
from innerloop.automl.similarity_search import similarity_search
from innerloop.evaluate.protocol import mean_and_ci95

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
MAIN_METHODS = ("random", "warm_start", "global_best", "similarity")
NAMES = {"random": "Random search", "warm_start": "Warm start (nearest datasets' best)",
         "global_best": "Global best (mean over datasets)",
         "similarity": "Warm start + similarity search (model-based)"}


def method_orders(method: str, target_features: np.ndarray, target_scores: np.ndarray, rest: MetaKnowledge,
                  num_initial: int, seeds: range) -> list[list[int]]:
    """Each seed's evaluation order of the pool for ``method`` on one target (``target_scores``
    answers the similarity search's evaluations)."""
    size = len(rest.configurations)
    if method == "similarity":
        nearest, _ = nearest_datasets(target_features, rest, num_initial)
        order, _ = similarity_search(rest, warm_start_configurations(target_features, rest, num_initial),
                                     lambda index: float(target_scores[index]), size, num_initial, nearest)
        return [order for _ in seeds]
    if method == "random":
        return [random_search_order(size, seed) for seed in seeds]
    if method == "warm_start":
        initial = warm_start_configurations(target_features, rest, num_initial)
    elif method == "global_best":
        initial = global_best_configurations(rest, num_initial)
    else:
        raise ValueError(f"unknown method {method}")
    return [search_order(initial, size, seed) for seed in seeds]


def generator_family(dataset: TabularDataset) -> str:
    """The synthetic generator a dataset was drawn from (``source["generator"]``, e.g.
    ``make_moons``), or its own name for a dataset not made by a generator (the bundled ones)."""
    return str(dataset.source.get("generator", dataset.name))


def family_rows(families: list[str]) -> list[list[int]]:
    """For each target row, every row of its family (itself included): the rows leave-family-out removes."""
    return [[row for row, other in enumerate(families) if other == family] for family in families]


def same_family_share(knowledge: MetaKnowledge, families: list[str], num_neighbours: int,
                      left_out: list[list[int]] | None = None) -> float:
    """Mean over targets of the share of its ``num_neighbours`` nearest meta-training datasets
    that come from the target's own generator family."""
    shares = []
    for target in range(knowledge.num_datasets):
        removed = left_out[target] if left_out is not None else [target]
        kept = [row for row in range(knowledge.num_datasets) if row not in removed]
        nearest, _ = nearest_datasets(knowledge.meta_features[target], knowledge.without(removed), num_neighbours)
        shares.append(np.mean([families[kept[row]] == families[target] for row in nearest]))
    return float(np.mean(shares))


def leave_one_out(knowledge: MetaKnowledge, methods: dict[str, tuple[str, int]], seeds: range,
                  tolerances: list[float], curve_length: int,
                  left_out: list[list[int]] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per method: ``evaluations [tolerances, targets, seeds]`` and ``regret [targets, seeds, curve_length]``.
    ``left_out[target]`` (rows, the target included) are removed from the meta-training datasets of
    that target; by default only the target itself (leave-one-dataset-out)."""
    num_targets = knowledge.num_datasets
    results = {key: {"evaluations": np.zeros((len(tolerances), num_targets, len(seeds))),
                     "regret": np.zeros((num_targets, len(seeds), curve_length))} for key in methods}
    for target in range(num_targets):
        removed = left_out[target] if left_out is not None else [target]
        if target not in removed:
            raise ValueError(f"leave_one_out: left_out[{target}] must include the target row itself")
        rest = knowledge.without(removed)
        scores = knowledge.scores[target]
        best = float(scores.max())
        for key, (method, num_initial) in methods.items():
            orders = method_orders(method, knowledge.meta_features[target], scores, rest, num_initial, seeds)
            for s, order in enumerate(orders):
                trajectory = scores[order]
                for t, tolerance in enumerate(tolerances):
                    results[key]["evaluations"][t, target, s] = evaluations_to_reach(trajectory, best - tolerance)
                results[key]["regret"][target, s] = regret_curve(trajectory, best, curve_length)
    return results


def summary(values: np.ndarray) -> dict[str, float]:
    mean, ci95 = mean_and_ci95(torch.from_numpy(np.asarray(values, dtype=np.float64)))
    return {"mean": round(mean, 3), "ci95": round(ci95, 3), "median": round(float(np.median(values)), 3)}


def time_evaluations(datasets: list, pool: tuple, per_dataset: int) -> dict[str, float]:
    """Seconds per pool evaluation (the first ``per_dataset`` configurations of every family mix,
    a fixed spread over the pool) and per meta-feature computation, medians and means."""
    evaluation_seconds, feature_seconds = [], []
    picks = np.linspace(0, len(pool) - 1, per_dataset).astype(int)
    for dataset in datasets:
        for index in picks:
            start = time.perf_counter()
            evaluate_configuration(pool[index], dataset)
            evaluation_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        meta_features(dataset)
        feature_seconds.append(time.perf_counter() - start)
    return {"evaluation_seconds_mean": round(float(np.mean(evaluation_seconds)), 4),
            "evaluation_seconds_median": round(float(np.median(evaluation_seconds)), 4),
            "meta_features_seconds_mean": round(float(np.mean(feature_seconds)), 4),
            "meta_features_seconds_median": round(float(np.median(feature_seconds)), 4),
            "evaluations_timed": len(evaluation_seconds)}


def plot_regret(results: dict, methods: list[str], tolerance: float, path: Path, pool_size: int,
                protocol: str = "Leave-one-dataset-out") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"random": "tab:gray", "warm_start": "tab:blue", "global_best": "tab:orange", "similarity": "tab:green"}
    for key in methods:
        per_target = results[key]["regret"].mean(axis=1)  # [targets, length]
        steps = np.arange(1, per_target.shape[1] + 1)
        mean = per_target.mean(axis=0)
        half = 1.96 * per_target.std(axis=0, ddof=1) / np.sqrt(per_target.shape[0])
        left.plot(steps, 100 * mean, label=NAMES[key], color=colours.get(key))
        left.fill_between(steps, 100 * (mean - half), 100 * (mean + half), alpha=0.2, color=colours.get(key))
        reached = results[key]["evaluations"][0].ravel()
        right.plot(steps, [(reached <= t).mean() for t in steps], label=NAMES[key], color=colours.get(key))
    left.set(xlabel="evaluations", ylabel="regret (accuracy points)", xscale="log",
             title="best in pool − best so far (mean over datasets, 95% CI)")
    left.set_yscale("symlog", linthresh=0.1)
    left.set_ylim(bottom=0.0)
    right.set(xlabel="evaluations", ylabel="fraction of (dataset, seed) runs", xscale="log", ylim=(0, 1.02),
              title=f"runs within {tolerance:g} of the pool's best accuracy")
    left.legend()
    right.grid(alpha=0.3)
    left.grid(alpha=0.3)
    figure.suptitle(f"{protocol}, pool of {pool_size} configurations", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown_table(report: dict) -> str:
    settings = report["settings"]
    protocol = ("Leave-family-out (a synthetic target's whole generator family is removed from its meta-training "
                "datasets; a bundled target is left out alone)" if settings.get("leave_family_out")
                else "Leave-one-dataset-out")
    lines = [f"{protocol} over {settings['datasets']} datasets ({settings['bundled']} bundled, "
             f"{settings['synthetic']} synthetic), pool of {settings['pool_size']} configurations, "
             f"{settings['seeds']} random-search seeds per dataset, {settings['neighbours']} initial configurations "
             f"({report['date']}). Evaluations until the best validation accuracy so far is within the tolerance of "
             "the pool's best on that dataset: mean ± 95% CI over datasets (median); speed-up = random search's "
             "mean evaluations / the method's, per dataset. Meta-features from the train split only (landmarkers "
             f"cross-validated within it). Share of a target's {settings['neighbours']} nearest meta-training "
             f"datasets from its own generator family: {report['same_family_share']:.0%}.", ""]
    for tolerance in report["tolerances"]:
        key = f"{tolerance:g}"
        lines += [f"**Within {tolerance:g} ({100 * tolerance:g} accuracy point{'s' if tolerance != 0.01 else ''}) "
                  "of the pool's best:**", "",
                  "| Method | Evaluations (mean ± CI) | Median | Saved vs random (paired, mean ± CI) "
                  "| Speed-up over random (mean ± CI) | Median speed-up | Datasets faster / slower than random |",
                  "|---|---|---|---|---|---|---|"]
        for row in report["methods"]:
            evaluations, speed, saved = row["evaluations"][key], row["speedup"][key], row["saved_vs_random"][key]
            lines.append(f"| {row['name']} | {evaluations['mean']:.1f} ± {evaluations['ci95']:.1f} | "
                         f"{evaluations['median']:.1f} | {saved['mean']:.1f} ± {saved['ci95']:.1f} | "
                         f"{speed['mean']:.2f} ± {speed['ci95']:.2f} | "
                         f"{speed['median']:.2f} | {row['faster'][key]} / {row['slower'][key]} |")
        lines.append("")
    lines += ["**Regret (the pool's best minus the best so far, in accuracy points) after a budget of evaluations, "
              "mean ± CI over datasets:**", "",
              "| Method | " + " | ".join(f"after {b}" for b in report["budgets"]) + " |",
              "|---|" + "---|" * len(report["budgets"])]
    for row in report["methods"]:
        lines.append(f"| {row['name']} | " + " | ".join(
            f"{row['regret_points'][str(b)]['mean']:.2f} ± {row['regret_points'][str(b)]['ci95']:.2f}"
            for b in report["budgets"]) + " |")
    lines += ["", f"Number of nearest datasets (warm start) / top configurations (global best), "
              f"within {report['tolerances'][0]:g} of the pool's best:", "",
              "| Initial configurations | Warm start: evaluations (mean ± CI) | Global best: evaluations (mean ± CI) |",
              "|---|---|---|"]
    first = f"{report['tolerances'][0]:g}"
    for k, row in report["ablation"].items():
        lines.append(f"| {k} | {row['warm_start'][first]['mean']:.1f} ± {row['warm_start'][first]['ci95']:.1f} | "
                     f"{row['global_best'][first]['mean']:.1f} ± {row['global_best'][first]['ci95']:.1f} |")
    lines += ["", "Bundled datasets (mean evaluations over seeds, within "
              f"{report['tolerances'][0]:g} of the pool's best):", "",
              "| Dataset | Best in pool | " + " | ".join(NAMES[m] for m in MAIN_METHODS) + " |",
              "|---|---|" + "---|" * len(MAIN_METHODS)]
    for row in report["per_dataset"][:settings["bundled"]]:
        lines.append(f"| {row['dataset']} | {row['best_in_pool']:.3f} | "
                     + " | ".join(f"{row['evaluations'][m][first]:.1f}" for m in MAIN_METHODS) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=56, help="synthetic datasets beside the 4 bundled ones")
    parser.add_argument("--collection-seed", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=150)
    parser.add_argument("--pool-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=20, help="random-search seeds per target dataset")
    parser.add_argument("--neighbours", type=int, default=5,
                        help="nearest datasets (warm start) and top configurations (global best)")
    parser.add_argument("--ablation", default="1,3,5,10", help="numbers of initial configurations to compare")
    parser.add_argument("--tolerances", default="0.01,0.005", help="absolute accuracy below the pool's best")
    parser.add_argument("--budgets", default="1,3,5,10,25", help="evaluation budgets for the regret table")
    parser.add_argument("--curve-length", type=int, default=150)
    parser.add_argument("--timing-sample", type=int, default=5, help="evaluations timed per dataset (0: none)")
    parser.add_argument("--cache-dir", default=str(REPO / "runs" / "automl"))
    parser.add_argument("--json", default=None,
                        help="default benchmarks/results/automl_warm_start.json "
                             "(automl_warm_start_leave_family_out.json with --leave-family-out)")
    parser.add_argument("--plot", default=None,
                        help="default docs/automl-warm-start-regret.png (none with --leave-family-out)")
    parser.add_argument("--leave-family-out", action="store_true",
                        help="also remove a synthetic target's whole generator family from its meta-training datasets")
    parser.add_argument("--table", action="store_true", help="write the Markdown table beside the JSON and print it")
    args = parser.parse_args()
    if args.json is None:
        args.json = str(RESULTS / ("automl_warm_start_leave_family_out.json" if args.leave_family_out
                                   else "automl_warm_start.json"))
    if args.plot is None and not args.leave_family_out:
        args.plot = str(REPO / "docs" / "automl-warm-start-regret.png")
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    start = time.perf_counter()
    tolerances = [float(value) for value in args.tolerances.split(",")]
    budgets = [int(value) for value in args.budgets.split(",")]
    ablation = [int(value) for value in args.ablation.split(",")]
    seeds = range(args.seeds)
    if max(budgets) > args.curve_length:
        raise SystemExit(f"--budgets go up to {max(budgets)} evaluations; raise --curve-length to at least that")
    with threadpool_limits(1):
        datasets = dataset_collection(args.synthetic, seed=args.collection_seed)
        pool = configuration_pool(args.pool_size, seed=args.pool_seed)
        knowledge, cache, cached = load_or_build_knowledge(
            datasets, pool, args.cache_dir,
            progress=lambda i, d, s: print(f"[{i + 1}/{len(datasets)}] {d.name}: {len(pool)} evaluations in {s:.1f} s",
                                           flush=True))
        build_seconds = time.perf_counter() - start
        print(f"knowledge {'read from' if cached else 'written to'} {cache} ({build_seconds:.0f} s)", flush=True)
        timing = time_evaluations(datasets, pool, args.timing_sample) if args.timing_sample else {}
    methods = {key: (key, args.neighbours) for key in MAIN_METHODS}
    for k in ablation:
        methods[f"warm_start@{k}"] = ("warm_start", k)
        methods[f"global_best@{k}"] = ("global_best", k)
    families = [generator_family(dataset) for dataset in datasets]
    left_out = family_rows(families) if args.leave_family_out else None
    results = leave_one_out(knowledge, methods, seeds, tolerances, args.curve_length, left_out)
    per_target = {key: value["evaluations"].mean(axis=2) for key, value in results.items()}  # [tolerances, targets]
    rows = []
    for key in MAIN_METHODS:
        speedup = per_target["random"] / per_target[key]
        rows.append({"key": key, "name": NAMES[key],
                     "evaluations": {f"{tol:g}": summary(per_target[key][t]) for t, tol in enumerate(tolerances)},
                     "speedup": {f"{tol:g}": summary(speedup[t]) for t, tol in enumerate(tolerances)},
                     "saved_vs_random": {f"{tol:g}": summary(per_target["random"][t] - per_target[key][t])
                                         for t, tol in enumerate(tolerances)},
                     "faster": {f"{tol:g}": int((per_target[key][t] < per_target["random"][t]).sum())
                                for t, tol in enumerate(tolerances)},
                     "slower": {f"{tol:g}": int((per_target[key][t] > per_target["random"][t]).sum())
                                for t, tol in enumerate(tolerances)},
                     "regret_points": {str(b): summary(100 * results[key]["regret"][:, :, b - 1].mean(axis=1))
                                       for b in budgets},
                     "mean_regret_curve_points": [round(100 * float(v), 4)
                                                  for v in results[key]["regret"].mean(axis=(0, 1))]})
    bundled = len(datasets) - args.synthetic
    report = {
        "benchmark": "automl_warm_start", "date": time.strftime("%Y-%m-%d"),
        "command": "python -m benchmarks.automl_warm_start " + " ".join(sys.argv[1:]),
        "settings": {"datasets": len(datasets), "bundled": bundled, "synthetic": args.synthetic,
                     "collection_seed": args.collection_seed, "pool_size": len(pool), "pool_seed": args.pool_seed,
                     "pool_models": {m: sum(c.model == m for c in pool) for m in dict.fromkeys(c.model for c in pool)},
                     "seeds": args.seeds, "neighbours": args.neighbours, "validation_fraction": 0.3,
                     "meta_features": list(knowledge.feature_names),
                     "meta_feature_protocol": knowledge.meta_feature_protocol,
                     "leave_family_out": args.leave_family_out, "threads": 1},
        "same_family_share": round(same_family_share(knowledge, families, args.neighbours, left_out), 4),
        "same_family_share_leave_one_dataset_out": round(same_family_share(knowledge, families, args.neighbours), 4),
        "tolerances": tolerances, "budgets": budgets, "cache": str(cache), "cache_was_read": cached,
        "build_seconds": round(build_seconds, 1), "timing": timing,
        "methods": rows,
        "ablation": {str(k): {method: {f"{tol:g}": summary(per_target[f"{method}@{k}"][t])
                                       for t, tol in enumerate(tolerances)}
                              for method in ("warm_start", "global_best")} for k in ablation},
        "per_dataset": [{"dataset": name, "best_in_pool": round(float(knowledge.scores[i].max()), 4),
                         "best_configuration": pool[int(knowledge.scores[i].argmax())].describe(),
                         "fraction_within": {f"{tol:g}": round(float((knowledge.scores[i] >= knowledge.scores[i].max()
                                                                       - tol - 1e-9).mean()), 4) for tol in tolerances},
                         "evaluations": {key: {f"{tol:g}": round(float(per_target[key][t, i]), 2)
                                               for t, tol in enumerate(tolerances)} for key in MAIN_METHODS}}
                        for i, name in enumerate(knowledge.dataset_names)],
    }
    if args.plot:
        plot_regret(results, list(MAIN_METHODS), tolerances[0], Path(args.plot), len(pool),
                    "Leave-family-out" if args.leave_family_out else "Leave-one-dataset-out")
        plot = Path(args.plot).resolve()
        report["plot"] = str(plot.relative_to(REPO)) if plot.is_relative_to(REPO) else str(plot)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    for row in rows:
        first = f"{tolerances[0]:g}"
        print(f"{row['name']}: {row['evaluations'][first]['mean']:.1f} ± {row['evaluations'][first]['ci95']:.1f} "
              f"evaluations (median {row['evaluations'][first]['median']:.1f}), speed-up "
              f"{row['speedup'][first]['mean']:.2f} ± {row['speedup'][first]['ci95']:.2f} "
              f"(median {row['speedup'][first]['median']:.2f})", flush=True)
    print(f"wall time {report['wall_seconds']:.0f} s", flush=True)
    if args.table:
        table = markdown_table(report)
        path.with_suffix(".md").write_text(table)
        print(table)


if __name__ == "__main__":
    main()
