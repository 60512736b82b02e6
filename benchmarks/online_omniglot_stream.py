"""Online learning of a stream of unseen Omniglot classes: FTML, OML and naive fine-tuning.

Every learner trains on the Omniglot *background* alphabets and is then scored on the same
seeded streams of *evaluation*-alphabet classes (:class:`innerloop.online.ClassStream`:
``--stream-classes`` classes in a seeded order, ``--classes-per-arrival`` at a time, each with
``--train-shots`` training images shown one at a time and ``--test-shots`` held-out images).
After every arrival the protocol (:func:`innerloop.online.evaluate_stream`) scores all classes
seen so far, classified among all seen classes ("all seen") and among their own arrival's
classes ("within task"); the numbers are means over ``--seeds`` stream orders with 95%
Student-t intervals over those orders. Each method is trained once, so the intervals cover
stream orders only, not training seeds. Paired differences (OML − FTML, OML − fine-tuning,
FTML − fine-tuning) of the final all-seen accuracy and forgetting are taken stream by stream
(:func:`innerloop.online.paired_difference`), mean ± Student-t interval.

* **FTML** (:class:`innerloop.online.FTML`): ``θ`` pre-trained by ``--ftml-steps`` MAML updates
  (``--ftml-order``, first order by default) on 5-way 5-shot background episodes; on the stream
  each arrival is a task: adapted from ``θ`` by ``--ftml-eval-steps`` inner steps, then buffered
  and followed by ``--ftml-meta-steps`` MAML updates on buffered tasks. Seen classes are scored
  by adapting ``θ`` on their buffered images. ``ftml-no-updates`` (ablation): the same without
  meta-updates on the stream.
* **OML** (:class:`innerloop.online.OML`): ``--oml-steps`` meta-updates (``--oml-meta-batch``
  trajectories of one background class's ``--train-shots`` images plus 15 remembered images);
  on the stream the RLN is frozen and the PLN takes one SGD step per image.
* **Fine-tuning** (:class:`innerloop.online.NaiveFineTuning`): ``--pretrain-steps`` supervised
  steps (batches of 64 background images) and, as a second row, the same network from scratch;
  on the stream every weight takes one SGD step per image — the same updates as OML's PLN.

The online learning rate of OML and fine-tuning is chosen from ``--lr-grid``, and the Adam rate
of FTML's meta-updates on the stream from ``--ftml-stream-lr-grid``, by the final all-seen
accuracy on two streams of 30 *validation* classes: 64 background classes held out from all
training (FTML's inner rate is its meta-training one). The background classes used for training
are the other 900. ``--save-dir`` keeps each trained network; ``--load-dir`` reuses them.

    python -m benchmarks.online_omniglot_stream [--methods ftml,ftml-no-updates,oml,finetune,scratch]
        [--seeds 8] [--stream-classes 100] [--save-dir DIR] [--load-dir DIR] [--quick]

writes ``benchmarks/results/online_omniglot_stream.json`` (curves and summaries), the Markdown
table beside it and the plot ``docs/online-omniglot-stream.png``. Runs on one thread.
``--methods`` runs a subset and merges its rows into an existing JSON of the same stream settings
(each row keeps its own command, date and wall time). ``--resummarize`` runs nothing: it
recomputes the summaries and paired differences of an existing JSON from its per-seed values
(see :func:`resummarize`) and rewrites the JSON, the table and the plot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from innerloop.data import load_split
from innerloop.data.store import ClassSplit
from innerloop.evaluate.protocol import t_quantile_95
from innerloop.online import (
    FTML,
    OML,
    VIEWS,
    ClassBatches,
    ClassStream,
    NaiveFineTuning,
    OnlineNetwork,
    evaluate_stream,
    paired_difference,
    subset,
    summarize_records,
)
from innerloop.online.stream import interval_over_seeds
from innerloop.tasks.sampler import EpisodeSampler

RESULTS = Path(__file__).parent / "results"
DOCS = Path(__file__).parent.parent / "docs"
VALIDATION_CLASSES = 64
VALIDATION_STREAM_CLASSES = 30
SPLIT_SEED = 12345
LABELS = {"ftml": "FTML", "ftml-no-updates": "FTML without stream meta-updates (ablation)", "oml": "OML",
          "finetune": "Fine-tuning (pretrained)", "scratch": "Fine-tuning (from scratch)"}
TRAINING = {"ftml": "ftml", "ftml-no-updates": "ftml", "oml": "oml", "finetune": "finetune"}  # whose weights
PAIRS = (("oml", "ftml"), ("oml", "finetune"), ("ftml", "finetune"))  # paired differences: first − second
PAIRED_METRICS = {"final_seen_accuracy": lambda record: record["seen_accuracy"]["all_seen"][-1],
                  "forgetting": lambda record: record["forgetting"]["all_seen"]}  # per seed, all-seen view
INTERVAL = "student-t"  # what the JSON's intervals are (older JSONs: normal, 1.96)


def background_splits(root: str | None) -> tuple[ClassSplit, ClassSplit]:
    """The background alphabets cut into training classes and held-out validation classes."""
    background = load_split("omniglot", "background", root, rotations=(0,))
    order = torch.randperm(background.num_classes, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return (subset(background, order[VALIDATION_CLASSES:], "background-train"),
            subset(background, order[:VALIDATION_CLASSES], "background-validation"))


def network(args: argparse.Namespace, num_outputs: int) -> OnlineNetwork:
    return OnlineNetwork(num_outputs, hidden_channels=args.channels, hidden_size=args.hidden)


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def train(name: str, num_steps: int, step, log_every: int) -> dict:
    """Run ``step(i) -> metrics`` ``num_steps`` times; the training's cost and last metrics."""
    start, cpu = time.perf_counter(), time.process_time()
    recent: list[dict] = []
    for index in range(num_steps):
        recent = (recent + [step(index)])[-log_every:]
        if (index + 1) % log_every == 0 or index == num_steps - 1:
            means = {k: round(sum(m[k] for m in recent) / len(recent), 4) for k in recent[0]}
            log(f"{name} {index + 1}/{num_steps} {means} ({time.perf_counter() - start:.0f} s)")
    return {"steps": num_steps, "wall_seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1), "last": means if num_steps else {}}


def train_ftml(args: argparse.Namespace, split: ClassSplit) -> tuple[FTML, dict]:
    torch.manual_seed(args.seed)
    learner = FTML(network(args, 5), inner_lr=args.ftml_inner_lr, num_inner_steps=args.ftml_inner_steps,
                   eval_inner_steps=args.ftml_eval_steps, order=args.ftml_order, meta_lr=args.meta_lr,
                   stream_meta_lr=args.ftml_stream_lr_grid[0], meta_batch_size=args.ftml_meta_batch,
                   meta_steps_per_arrival=args.ftml_meta_steps, support_shots=args.ftml_support_shots)
    sampler = EpisodeSampler(split, 5, args.train_shots, args.ftml_queries)
    generator = torch.Generator().manual_seed(args.seed)
    cost = train("ftml", args.ftml_steps, lambda _: learner.meta_update(sampler.sample(args.ftml_meta_batch, generator)),
                 args.log_every)
    return learner, cost


def train_oml(args: argparse.Namespace, split: ClassSplit) -> tuple[OML, dict]:
    torch.manual_seed(args.seed)
    learner = OML(network(args, split.num_classes), inner_lr=args.oml_inner_lr, order=args.oml_order)
    batches, generator = ClassBatches(split), torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(learner.network.parameters(), lr=args.meta_lr)

    def step(_: int) -> dict:
        optimizer.zero_grad(set_to_none=True)
        metrics = []
        for _ in range(args.oml_meta_batch):
            trajectory_x, trajectory_y = batches.sample(1, args.train_shots, generator)
            remember_x, remember_y = batches.sample(args.oml_remember, 1, generator)
            loss, values = learner.meta_loss(trajectory_x, trajectory_y, remember_x, remember_y)
            (loss / args.oml_meta_batch).backward()
            metrics.append(values)
        optimizer.step()
        return {k: sum(m[k] for m in metrics) / len(metrics) for k in metrics[0]}

    return learner, train("oml", args.oml_steps, step, args.log_every)


def train_finetune(args: argparse.Namespace, split: ClassSplit) -> tuple[NaiveFineTuning, dict]:
    torch.manual_seed(args.seed)
    learner = NaiveFineTuning(network(args, split.num_classes))
    batches, generator = ClassBatches(split), torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(learner.network.parameters(), lr=args.meta_lr)

    def step(_: int) -> dict:
        optimizer.zero_grad(set_to_none=True)
        loss, metrics = learner.supervised_loss(*batches.sample(64, 1, generator))
        loss.backward()
        optimizer.step()
        return metrics

    return learner, train("finetune", args.pretrain_steps, step, args.log_every)


def load_or_train(key: str, args: argparse.Namespace, split: ClassSplit, trained: dict) -> tuple:
    """The trained learner of ``key``: weights trained earlier in this run, or saved under
    ``--load-dir``, or trained now (and saved under ``--save-dir``)."""
    make = {"ftml": train_ftml, "oml": train_oml, "finetune": train_finetune}[TRAINING[key]]
    saved = Path(args.load_dir) / f"{TRAINING[key]}.pt" if args.load_dir else None
    if TRAINING[key] in trained or (saved is not None and saved.is_file()):
        payload = trained.get(TRAINING[key]) or torch.load(saved, weights_only=True)
        untrained = argparse.Namespace(**{**vars(args), "ftml_steps": 0, "oml_steps": 0, "pretrain_steps": 0})
        learner, _ = make(untrained, split)
        learner.network.load_state_dict(payload["network"])
        return learner, {**payload["training"], "reused": True}
    learner, cost = make(args, split)
    trained[TRAINING[key]] = {"network": {k: v.clone() for k, v in learner.network.state_dict().items()},
                              "training": cost}
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        torch.save(trained[TRAINING[key]], Path(args.save_dir) / f"{TRAINING[key]}.pt")
    return learner, cost


def choose_rate(learner, attribute: str, grid: list[float], validation: ClassSplit,
                args: argparse.Namespace) -> tuple[float, dict]:
    """The rate of ``grid`` (set as ``learner.<attribute>``) with the best final all-seen accuracy
    on two streams of validation classes; the learner keeps it."""
    streams = [ClassStream(validation, VALIDATION_STREAM_CLASSES, args.train_shots, args.test_shots,
                           args.classes_per_arrival, seed) for seed in (10_001, 10_002)]
    scores = {}
    for rate in grid:
        setattr(learner, attribute, rate)
        scores[rate] = sum(float(evaluate_stream(learner, s).seen_accuracy("all_seen")[-1]) for s in streams) / 2
    best = max(scores, key=scores.get)
    setattr(learner, attribute, best)
    log(f"{learner.name}: {attribute} {best} (validation all-seen accuracy by rate {scores})")
    return best, {str(rate): round(score, 4) for rate, score in scores.items()}


def rounded(value, digits: int = 4):
    """``value`` with every float rounded to ``digits`` significant digits (a smaller JSON)."""
    if isinstance(value, float):
        return value if not math.isfinite(value) else float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def paired_differences(report: dict) -> dict:
    """For each pair of ``PAIRS`` present in ``report``: ``[mean, ci95]`` of the per-stream
    differences (first − second) of each ``PAIRED_METRICS`` value, over the streams both were
    scored on (the same seeds; raises SystemExit when the rows' seeds differ)."""
    rows = {row["key"]: row for row in report["results"]}
    differences = {}
    for first, second in PAIRS:
        if first not in rows or second not in rows:
            continue
        records = {key: sorted(rows[key]["records"], key=lambda record: record["seed"]) for key in (first, second)}
        if [r["seed"] for r in records[first]] != [r["seed"] for r in records[second]]:
            raise SystemExit(f"{first} and {second} were scored on different stream seeds; no paired difference")
        differences[f"{first} - {second}"] = {
            metric: paired_difference([value(r) for r in records[first]], [value(r) for r in records[second]])
            for metric, value in PAIRED_METRICS.items()}
    return differences


def resummarize(report: dict) -> dict:
    """``report`` with every row's intervals recomputed (Student-t) from the per-seed values the
    JSON keeps: the seen-accuracy curves and their final values, forgetting, new-class accuracy
    and seconds per stream. The means stay as stored (computed from the unrounded per-seed values;
    the recomputed ones must agree within the JSON's rounding). The learning-speed numbers (curve, fraction reached, updates to the
    threshold) need the per-seed probe curves, which the JSON does not keep: a report whose
    intervals were normal has their half-widths scaled by ``t_{0.975,n-1} / 1.96`` (the same
    change for the same per-seed spread). Adds the paired differences and a note."""
    was_normal = report.get("interval") != INTERVAL
    for row in report["results"]:
        records = sorted(row["records"], key=lambda record: record["seed"])
        summary = row["summary"]

        def keep_mean(stored: list, values) -> list:
            mean, half_width = interval_over_seeds(values)
            if stored[0] is not None and not math.isnan(stored[0]) and abs(mean - stored[0]) > 1e-3 * abs(stored[0]):
                raise SystemExit(f"{row['key']}: per-seed values give mean {mean}, the summary says {stored[0]}; "
                                 "the JSON's records are not the summarized ones: rerun the benchmark")
            return [stored[0], half_width]

        for view in VIEWS:
            curves = torch.tensor([r["seen_accuracy"][view] for r in records], dtype=torch.float64)
            forgetting = [math.nan if r["forgetting"][view] is None else r["forgetting"][view] for r in records]
            new_class = [sum(r["new_class_accuracy"][view]) / len(r["new_class_accuracy"][view]) for r in records]
            stored = summary[view]
            summary[view] = {
                "seen_curve": [keep_mean(stored["seen_curve"][t], curves[:, t]) for t in range(curves.shape[1])],
                "final_seen_accuracy": keep_mean(stored["final_seen_accuracy"], curves[:, -1]),
                "forgetting": keep_mean(stored["forgetting"], forgetting),
                "new_class_accuracy": keep_mean(stored["new_class_accuracy"], new_class),
            }
        summary["seconds_per_stream"] = keep_mean(summary["seconds_per_stream"], [r["seconds"] for r in records])
        if was_normal:
            scale = t_quantile_95(len(records) - 1) / 1.96
            speed = summary["learning_speed"]
            speed["curve"] = [[mean, half * scale] for mean, half in speed["curve"]]
            for key in ("fraction_reached", "updates_to_threshold"):
                speed[key] = [speed[key][0], speed[key][1] * scale]
    if was_normal:
        seeds = len(report["settings"]["seeds"])
        report["notes"] = report.get("notes", []) + [
            f"Intervals recomputed as Student-t (t_{{0.975,{seeds - 1}}} = {t_quantile_95(seeds - 1)}) from the "
            "per-seed values kept here, without rerunning anything; the learning-speed intervals (curve, "
            "fraction reached, updates to threshold), whose per-seed probe curves are not kept, were the "
            f"normal ones scaled by {t_quantile_95(seeds - 1)}/1.96."]
    report["interval"] = INTERVAL
    report["paired_differences"] = paired_differences(report)
    return report


def markdown_table(report: dict) -> str:
    def cell(pair: list[float], scale: float = 100.0) -> str:
        return "—" if pair[0] is None or math.isnan(pair[0]) else f"{scale * pair[0]:.1f} ± {scale * pair[1]:.1f}"

    settings = report["settings"]
    lines = [f"Omniglot evaluation alphabets, {settings['stream_classes']} classes arriving "
             f"{settings['classes_per_arrival']} at a time, {settings['train_shots']} training images per class shown "
             f"one at a time, {settings['test_shots']} held-out images per class; mean ± 95% Student-t CI over "
             f"{len(settings['seeds'])} stream orders, the same streams for every method ({report['date']}, "
             f"{report['wall_minutes']} min wall, one thread). One training run per method: the intervals cover "
             "stream orders only, not training seeds.",
             "",
             "| Method | All seen: final acc. (%) | All seen: forgetting | All seen: new-class acc. | "
             "Within task: final acc. | Within task: forgetting | New task before its updates → after | "
             "Wall: training / this row's run |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["results"]:
        s = row["summary"]
        speed = s["learning_speed"]["curve"]
        lines.append(f"| {LABELS[row['key']]} | {cell(s['all_seen']['final_seen_accuracy'])} | "
                     f"{cell(s['all_seen']['forgetting'])} | {cell(s['all_seen']['new_class_accuracy'])} | "
                     f"{cell(s['within_task']['final_seen_accuracy'])} | {cell(s['within_task']['forgetting'])} | "
                     f"{cell(speed[0])} → {cell(speed[-1])} ({len(speed) - 1} {row['update_unit']}) | "
                     f"{row['training'].get('wall_seconds', 0) / 60:.1f} min"
                     f"{' (weights of an earlier run)' if row['training'].get('reused') else ''} / "
                     f"{row.get('wall_minutes') or '?'} min |")
    if report.get("paired_differences"):
        lines += ["", "Paired differences on the same streams (first − second, points; mean ± 95% Student-t CI of "
                  "the per-stream differences, over stream orders only):", "",
                  "| Pair | All seen: final acc. | All seen: forgetting |", "|---|---|---|"]
        for pair, values in report["paired_differences"].items():
            first, second = pair.split(" - ")
            lines.append(f"| {LABELS[first]} − {LABELS[second]} | {cell(values['final_seen_accuracy'])} | "
                         f"{cell(values['forgetting'])} |")
    lines += ["", *report.get("notes", [])] if report.get("notes") else []
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    titles = {"all_seen": "among all seen classes (class-incremental)",
              "within_task": f"within each arrival ({report['settings']['classes_per_arrival']}-way)"}
    for axis, view in zip(axes, VIEWS):
        for row in report["results"]:
            s = row["summary"]
            x = s["classes_seen"]
            mean = [m for m, _ in s[view]["seen_curve"]]
            half = [0.0 if math.isnan(h) else h for _, h in s[view]["seen_curve"]]
            line, = axis.plot(x, mean, marker=".", label=LABELS[row["key"]])
            axis.fill_between(x, [m - h for m, h in zip(mean, half)], [m + h for m, h in zip(mean, half)],
                              color=line.get_color(), alpha=0.2)
        x = report["results"][0]["summary"]["classes_seen"]
        ways = report["settings"]["classes_per_arrival"]
        axis.plot(x, [1 / n if view == "all_seen" else 1 / ways for n in x], "--", color="gray", label="chance")
        axis.set_xlabel("classes seen")
        axis.set_ylabel("accuracy on all seen classes (held-out images)")
        axis.set_title(titles[view], fontsize=10)
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("Omniglot class stream (evaluation alphabets): mean and 95% Student-t CI over stream orders "
                    "(one training run per method)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None, help="folder holding omniglot/ (default: INNERLOOP_DATA)")
    parser.add_argument("--methods", default="ftml,ftml-no-updates,oml,finetune,scratch")
    parser.add_argument("--seeds", type=int, default=8, help="stream orders (seeds 0..seeds-1)")
    parser.add_argument("--stream-classes", type=int, default=100)
    parser.add_argument("--classes-per-arrival", type=int, default=5)
    parser.add_argument("--train-shots", type=int, default=5)
    parser.add_argument("--test-shots", type=int, default=15)
    parser.add_argument("--channels", type=int, default=32, help="Conv-4 channels")
    parser.add_argument("--hidden", type=int, default=64, help="width of the head's hidden layer")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--meta-lr", type=float, default=1e-3, help="Adam rate of every training")
    parser.add_argument("--ftml-steps", type=int, default=3000)
    parser.add_argument("--ftml-inner-lr", type=float, default=0.1)
    parser.add_argument("--ftml-inner-steps", type=int, default=5)
    parser.add_argument("--ftml-eval-steps", type=int, default=10)
    parser.add_argument("--ftml-order", default="first", help="first (default, for the budget) or second")
    parser.add_argument("--ftml-meta-batch", type=int, default=4)
    parser.add_argument("--ftml-queries", type=int, default=5)
    parser.add_argument("--ftml-meta-steps", type=int, default=5, help="MAML updates after each arrival")
    parser.add_argument("--ftml-support-shots", type=int, default=3)
    parser.add_argument("--ftml-stream-lr-grid", type=lambda text: [float(v) for v in text.split(",")],
                        default=[0.0001, 0.0003, 0.001],
                        help="Adam rates of FTML's meta-updates on the stream, one chosen on validation streams")
    parser.add_argument("--oml-steps", type=int, default=12000)
    parser.add_argument("--oml-meta-batch", type=int, default=4)
    parser.add_argument("--oml-remember", type=int, default=15)
    parser.add_argument("--oml-inner-lr", type=float, default=0.1)
    parser.add_argument("--oml-order", default="second")
    parser.add_argument("--pretrain-steps", type=int, default=6000)
    parser.add_argument("--lr-grid", type=lambda text: [float(v) for v in text.split(",")],
                        default=[0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1])
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--merge-from", action="append", default=[],
                        help="also take the rows of this JSON (same stream settings) into --json")
    parser.add_argument("--save-dir", help="save each trained network (and its training cost) here")
    parser.add_argument("--load-dir", help="reuse networks saved by --save-dir instead of training")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: check that everything runs")
    parser.add_argument("--resummarize", action="store_true",
                        help="run nothing: recompute the summaries and paired differences of --json from its "
                             "per-seed values and rewrite it, its table and --plot")
    parser.add_argument("--json", default=str(RESULTS / "online_omniglot_stream.json"))
    parser.add_argument("--plot", default=str(DOCS / "online-omniglot-stream.png"))
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.stream_classes, args.ftml_steps, args.oml_steps, args.pretrain_steps = 2, 20, 5, 5, 5
        args.lr_grid, args.ftml_stream_lr_grid, args.log_every = [0.01, 0.1], [0.001], 5
    torch.set_num_threads(1)
    if args.resummarize:
        path = Path(args.json)
        if not path.is_file():
            raise SystemExit(f"--resummarize reads an existing {path}; run the benchmark first")
        report = resummarize(json.loads(path.read_text()))
        write_report(report, path, Path(args.plot))
        return
    methods = [key for key in args.methods.split(",") if key]
    train_split, validation = background_splits(args.data_root)
    evaluation = load_split("omniglot", "evaluation", args.data_root, rotations=(0,))
    streams = [ClassStream(evaluation, args.stream_classes, args.train_shots, args.test_shots,
                           args.classes_per_arrival, seed) for seed in range(args.seeds)]
    results, trained = [], {}
    for key in methods:
        method_start = time.perf_counter()
        extra: dict = {}
        if key not in LABELS:
            raise SystemExit(f"unknown method {key!r}; choose from {', '.join(LABELS)}")
        if key == "scratch":
            torch.manual_seed(args.seed)
            learner, training = NaiveFineTuning(network(args, train_split.num_classes), name="scratch"), {"steps": 0}
        else:
            learner, training = load_or_train(key, args, train_split, trained)
        if key == "ftml-no-updates":
            learner.name, learner.meta_steps_per_arrival = key, 0
        unit = "inner steps on the task's images" if key.startswith("ftml") else "SGD steps, one image each"
        if not key.startswith("ftml"):
            extra["online_lr"], extra["validation_by_lr"] = choose_rate(learner, "online_lr", args.lr_grid,
                                                                        validation, args)
        elif key == "ftml" and len(args.ftml_stream_lr_grid) > 1:
            extra["stream_meta_lr"], extra["validation_by_lr"] = choose_rate(
                learner, "stream_meta_lr", args.ftml_stream_lr_grid, validation, args)
        records = []
        for stream in streams:
            records.append(evaluate_stream(learner, stream))
            log(f"{key} seed {stream.seed}: all-seen {float(records[-1].seen_accuracy('all_seen')[-1]):.3f}, "
                f"within-task {float(records[-1].seen_accuracy('within_task')[-1]):.3f} "
                f"({records[-1].seconds:.0f} s)")
        results.append({"key": key, "training": training, "update_unit": unit, **extra,
                        "wall_minutes": round((time.perf_counter() - method_start) / 60, 1),
                        "summary": summarize_records(records), "records": [r.to_json() for r in records]})
    command, today = "python -m benchmarks.online_omniglot_stream " + " ".join(sys.argv[1:]), time.strftime("%Y-%m-%d")
    settings = {"stream_classes": args.stream_classes, "classes_per_arrival": args.classes_per_arrival,
                "train_shots": args.train_shots, "test_shots": args.test_shots, "seeds": list(range(args.seeds))}
    path = Path(args.json)
    report = json.loads(path.read_text()) if path.is_file() else {}  # read now: another run may have written it
    if report.get("results") and report.get("interval") != INTERVAL:
        report = resummarize(report)  # older rows' normal intervals, made Student-t like the new ones
    same = {k: v for k, v in report.get("settings", {}).items() if k != "arguments"} == settings
    rows = {row["key"]: {"command": report.get("command"), "date": report.get("date"), "wall_minutes": None, **row}
            for row in report.get("results", [])} if same else {}  # older rows keep their command and date
    notes = report.get("notes", []) if same else []  # e.g. how older rows' intervals were recomputed
    for other in args.merge_from:
        merged = json.loads(Path(other).read_text())
        merged = merged if merged.get("interval") == INTERVAL else resummarize(merged)
        notes += [note for note in merged.get("notes", []) if note not in notes]
        if {k: v for k, v in merged["settings"].items() if k != "arguments"} != settings:
            raise SystemExit(f"{other} has other stream settings ({merged['settings']}); not merged")
        rows.update({row["key"]: {"command": merged.get("command"), "date": merged.get("date"),
                                  "wall_minutes": None, **row} for row in merged["results"]})
    rows.update({row["key"]: {**row, "command": command, "date": today, "arguments": vars(args)} for row in results})
    order = list(LABELS)
    report = {"benchmark": "online_omniglot_stream", "date": max(row["date"] for row in rows.values()),
              "commands": sorted({row["command"] for row in rows.values()}),
              "wall_minutes": round(sum(row["wall_minutes"] or 0 for row in rows.values()), 1), "torch_threads": 1,
              "interval": INTERVAL, "notes": notes, "settings": settings,
              "results": sorted(rows.values(), key=lambda row: order.index(row["key"]))}
    for row in report["results"]:  # per-seed curves of new-class accuracy: only their summary is kept
        row["records"] = [{k: v for k, v in record.items() if k != "new_class_curve"} for record in row["records"]]
    report["paired_differences"] = paired_differences(report)
    write_report(report, path, Path(args.plot))


def write_report(report: dict, path: Path, plot_path: Path) -> None:
    """The JSON at ``path``, the Markdown table beside it and the plot; prints the table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rounded(report), indent=1) + "\n")
    table = markdown_table(report)
    path.with_suffix(".md").write_text(table)
    plot(report, plot_path)
    print(table)


if __name__ == "__main__":
    main()
