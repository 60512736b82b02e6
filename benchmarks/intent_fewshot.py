"""Few-shot intent classification on frozen all-MiniLM-L6-v2 embeddings: ProtoNet, ANIL, MAML and
R2-D2 (closed-form ridge) heads meta-trained on each intent dataset, 5-way 1-shot and 5-shot,
with 95% intervals; for CLINC150 also out-of-scope detection.

For each method the recipe ``configs/text/<method>-banking77-5w1s.yaml`` is trained on every
setting with only the dataset, the shots and the run name changed: CLINC150 (in-domain class
split), CLINC150 cross-domain (test intents from domains unseen in meta-training), BANKING77 and
HWU64. The best checkpoint (chosen on meta-validation intents) is scored on 600 fixed seeded test
episodes (15 queries per class); CLINC150 runs are also scored with 15 out-of-scope queries per
episode (:mod:`innerloop.evaluate.out_of_scope`). A run folder that already holds a finished
training is evaluated again without retraining.

    python -m benchmarks.intent_fewshot [--methods protonet anil maml r2d2] [--datasets ...] [--shots 1 5]
        [--runs runs/text] [--json benchmarks/results/intent_fewshot.json]
    python -m benchmarks.intent_fewshot --table --json benchmarks/results/intent_fewshot.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from innerloop.config import load_config
from innerloop.evaluate.out_of_scope import OUT_OF_SCOPE_DATASETS, out_of_scope_run
from innerloop.evaluate.run import evaluate_run
from innerloop.train import Trainer, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
METHODS = ("protonet", "anil", "maml", "r2d2")
DATASETS = ("clinc150", "clinc150-cross-domain", "banking77", "hwu64")


def recipe(method: str) -> Path:
    return REPO / "configs" / "text" / f"{method}-banking77-5w1s.yaml"


def run_setting(method: str, dataset: str, shots: int, runs: Path, num_threads: int) -> dict:
    name = f"{method}-{dataset}-5w{shots}s"
    overrides = [f"name={name}", f"data.dataset={dataset}", f"train.shots={shots}", f"eval.shots={shots}",
                 f"num_threads={num_threads}"]
    config = load_config(recipe(method), overrides)
    run_dir = runs / name
    finished = (run_dir / "last.pt").is_file() and load_checkpoint(run_dir / "last.pt")["step"] >= config.train.steps
    start = time.perf_counter()
    result = Trainer(config, run_dir, progress=False).fit()
    seconds = None if finished else round(time.perf_counter() - start, 1)  # None: trained before
    report = evaluate_run(run_dir, "best")
    row = {"method": method, "dataset": dataset, "shots": shots, "accuracy": report.mean, "ci95": report.ci95,
           "best_step": result.best_step, "steps": result.steps, "train_seconds": seconds,
           "run_dir": str(run_dir), "recipe": str(recipe(method).relative_to(REPO))}
    if dataset in OUT_OF_SCOPE_DATASETS:
        oos = out_of_scope_run(run_dir, "best")
        row["out_of_scope"] = {"threshold": oos.threshold, **oos.scores}
    print(json.dumps(row), flush=True)
    return row


LABELS = {"clinc150": "CLINC150", "clinc150-cross-domain": "CLINC150 cross-domain", "banking77": "BANKING77",
          "hwu64": "HWU64"}
METHOD_LABELS = {"protonet": "ProtoNet", "anil": "ANIL head", "maml": "MAML", "r2d2": "R2-D2 head"}


def markdown_tables(results: list[dict], baselines: list[dict]) -> str:
    """The README's tables: accuracy per setting and method next to the frozen nearest
    prototype, then CLINC150's out-of-scope scores."""
    frozen = {(("clinc150-cross-domain" if row["split"] == "cross-domain" else row["dataset"]), row["shots"]):
              row for row in baselines}
    found = {(row["method"], row["dataset"], row["shots"]): row for row in results}
    datasets = [d for d in DATASETS if any(key[1] == d for key in found)]
    columns = [(d, shots) for d in datasets for shots in (1, 5)]

    def cell(row: dict | None) -> str:
        return "—" if row is None else f"{100 * row['accuracy']:.2f} ± {100 * row['ci95']:.2f}"

    methods = [m for m in METHODS if any(key[0] == m for key in found)]
    lines = ["| dataset, shots (5-way) | nearest prototype, frozen | "
             + " | ".join(METHOD_LABELS[m] for m in methods) + " |",
             "| --- | ---: |" + " ---: |" * len(methods)]
    for dataset, shots in columns:
        lines.append(f"| {LABELS[dataset]}, {shots}-shot | {cell(frozen.get((dataset, shots)))} | "
                     + " | ".join(cell(found.get((m, dataset, shots))) for m in methods) + " |")
    oos = [row for row in results if "out_of_scope" in row]
    if oos:
        lines += ["", "| method, CLINC150 split | shots | in-scope accuracy | out-of-scope recall | "
                      "accuracy without rejection | AUROC | threshold |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in sorted(oos, key=lambda r: (METHODS.index(r["method"]), r["dataset"], r["shots"])):
            scores = row["out_of_scope"]
            lines.append(f"| {METHOD_LABELS[row['method']]}, {LABELS[row['dataset']]} | {row['shots']} | "
                         + " | ".join(f"{100 * scores[k][0]:.2f} ± {100 * scores[k][1]:.2f}"
                                      for k in ("in_scope_accuracy", "out_of_scope_recall",
                                                "accuracy_without_rejection", "auroc"))
                         + f" | {scores['threshold']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--runs", default="runs/text", help="folder of the run folders")
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--json", help="write (merge) the results here")
    parser.add_argument("--table", action="store_true",
                        help="only print the Markdown tables of --json (and intent_baselines.json beside it)")
    args = parser.parse_args()
    if args.table:
        if not args.json:
            parser.error("--table reads the results of --json FILE")
        results = json.loads(Path(args.json).read_text())["results"]
        baselines = json.loads((Path(args.json).parent / "intent_baselines.json").read_text())["results"]
        print(markdown_tables(results, baselines))
        return
    rows = [run_setting(method, dataset, shots, Path(args.runs), args.num_threads)
            for method in args.methods for dataset in args.datasets for shots in args.shots]
    if args.json:
        path = Path(args.json)
        previous = json.loads(path.read_text())["results"] if path.is_file() else []
        key = lambda row: (row["method"], row["dataset"], row["shots"])  # noqa: E731
        earlier = {key(row): row for row in previous}
        for row in rows:  # a run evaluated again keeps the training time measured when it trained
            if row["train_seconds"] is None and key(row) in earlier:
                row["train_seconds"] = earlier[key(row)]["train_seconds"]
        keep = [row for row in previous if key(row) not in {key(r) for r in rows}]
        path.write_text(json.dumps({"benchmark": "intent_fewshot", "encoder": "all-MiniLM-L6-v2 (frozen)",
                                    "episodes": 600, "queries_per_class": 15, "date": time.strftime("%Y-%m-%d"),
                                    "results": keep + rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
