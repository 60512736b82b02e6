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
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from innerloop.config import load_config
from innerloop.evaluate.out_of_scope import OUT_OF_SCOPE_DATASETS, out_of_scope_run
from innerloop.evaluate.run import evaluate_run
from innerloop.train import Trainer

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
    start = time.perf_counter()
    result = Trainer(config, run_dir, progress=False).fit()
    seconds = time.perf_counter() - start
    report = evaluate_run(run_dir, "best")
    row = {"method": method, "dataset": dataset, "shots": shots, "accuracy": report.mean, "ci95": report.ci95,
           "best_step": result.best_step, "steps": result.steps, "train_seconds": round(seconds, 1),
           "run_dir": str(run_dir), "recipe": str(recipe(method).relative_to(REPO))}
    if dataset in OUT_OF_SCOPE_DATASETS:
        oos = out_of_scope_run(run_dir, "best")
        row["out_of_scope"] = {"threshold": oos.threshold, **oos.scores}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--runs", default="runs/text", help="folder of the run folders")
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--json", help="write (merge) the results here")
    args = parser.parse_args()
    rows = [run_setting(method, dataset, shots, Path(args.runs), args.num_threads)
            for method in args.methods for dataset in args.datasets for shots in args.shots]
    if args.json:
        path = Path(args.json)
        previous = json.loads(path.read_text())["results"] if path.is_file() else []
        keep = [row for row in previous
                if (row["method"], row["dataset"], row["shots"]) not in {(r["method"], r["dataset"], r["shots"]) for r in rows}]
        path.write_text(json.dumps({"benchmark": "intent_fewshot", "encoder": "all-MiniLM-L6-v2 (frozen)",
                                    "episodes": 600, "queries_per_class": 15, "date": time.strftime("%Y-%m-%d"),
                                    "results": keep + rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
