"""The ``innerloop`` command: wires configs to the layers below, prints user errors plainly.

    innerloop train CONFIG [--set key=value ...] [--run-dir DIR] [--data-root DIR]
    innerloop eval RUN_DIR [--checkpoint best|last] [--set eval.ways=20 ...] [--data-root DIR]
    innerloop robustness RUN_DIR [--label-noise 0.2 0.4] [--epsilon 0.1] [--pgd-steps 5] [--imbalance 0.4]
    innerloop out-of-scope RUN_DIR [--oos-queries 15] [--episodes N]   (CLINC150 runs)
    innerloop list
    innerloop bench [suite options]   (the benchmark suite of a source checkout: python -m benchmarks)
    innerloop demo [--data-root DIR] [--run-dir DIR] [--steps N] [--sinusoid-steps N]
    innerloop report RUN_DIR [RUN_DIR ...] [--out DIR] [--title TEXT]

Distributed meta-training: ``innerloop train`` launched by torchrun, one process per rank, each
on a slice of every meta-batch (see :mod:`innerloop.train.distributed`); rank 0 prints, writes
the run directory and evaluates. Each rank runs ``num_threads`` threads, so on a 2-core machine:

    torchrun --standalone --nproc_per_node 2 -m innerloop train CONFIG --set num_threads=1
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from innerloop.config import Config
from innerloop.errors import InnerloopError

RECIPES = Path(__file__).resolve().parents[3] / "configs"


def _train_and_report(config: Config, run_dir: Path, data_root: str | None, progress: bool,
                      evaluate: bool = True) -> int:
    """Meta-train (or resume) ``config`` in ``run_dir``, then score its best checkpoint. In a
    distributed run every rank trains, then all ranks leave the process group together; rank 0
    alone prints and evaluates (evaluation needs no process group, and the other ranks do not wait
    for it, so a long evaluation never meets a collective's timeout)."""
    from innerloop.evaluate.run import evaluate_run
    from innerloop.train.distributed import current_place, init_distributed, shutdown_distributed
    from innerloop.train.trainer import Trainer

    init_distributed()  # under torchrun: join the process group; otherwise nothing
    place = current_place()
    if place.is_main:
        ranks = f" ({place.world_size} processes, {place.backend})" if place.is_distributed else ""
        print(f"run directory: {run_dir}{ranks}")
    try:
        result = Trainer(config, run_dir, data_root=data_root, progress=progress, place=place).fit()
    except BaseException:
        shutdown_distributed(wait=False)  # the other ranks may never reach the barrier
        raise
    shutdown_distributed()
    if not place.is_main:
        return 0
    print(f"trained {result.steps} steps in {result.seconds:.0f} s; best validation {result.metric} "
          f"{result.best_val_score:.4f} at step {result.best_step}")
    if evaluate:
        print(evaluate_run(run_dir, "best", data_root=data_root).markdown())
    return 0


def _require_rl_extra() -> None:
    """The meta-RL commands need gymnasium (the ``rl`` extra); say so instead of a traceback."""
    from innerloop.errors import MissingExtraError

    try:
        import gymnasium  # noqa: F401
    except ImportError as error:
        raise MissingExtraError(f"meta-RL runs need gymnasium: pip install 'innerloop[rl]' ({error})") from None


def _train_rl(args: argparse.Namespace) -> int:
    """A meta-RL recipe (one with an ``env`` section): train, then score on the fixed test tasks."""
    _require_rl_extra()
    from innerloop.rl.config import load_rl_config
    from innerloop.rl.evaluate import evaluate_rl_run
    from innerloop.rl.trainer import RLTrainer

    config = load_rl_config(args.config, args.set)
    run_dir = Path(args.run_dir or Path("runs") / config.name)
    print(f"run directory: {run_dir}")
    result = RLTrainer(config, run_dir, progress=not args.quiet).fit()
    print(f"trained {result.iterations} iterations in {result.seconds:.0f} s; last iteration's return "
          f"before adaptation {result.final_return_before:.2f}, after {result.final_return_after:.2f}")
    if not args.no_eval:
        print(evaluate_rl_run(run_dir).markdown())
    return 0


def _is_rl(path: Path) -> bool:
    import yaml

    from innerloop.rl.config import is_rl_recipe

    try:
        return path.is_file() and is_rl_recipe(yaml.safe_load(path.read_text()))
    except yaml.YAMLError:
        return False  # the supervised loader reports the YAML error


def _is_bilevel(path: Path) -> bool:
    import yaml

    from innerloop.bilevel.recipe import is_bilevel_recipe

    try:
        return path.is_file() and is_bilevel_recipe(yaml.safe_load(path.read_text()))
    except yaml.YAMLError:
        return False


def _train_bilevel(args: argparse.Namespace) -> int:
    """A hyperparameter-learning recipe (one with an ``experiment`` key): every seed, then the table."""
    from innerloop.bilevel.recipe import load_recipe, run_recipe

    recipe = load_recipe(args.config, args.set)
    run_dir = Path(args.run_dir or Path("runs") / "bilevel" / recipe.name)
    print(f"run directory: {run_dir}")
    run_recipe(recipe, run_dir, args.data_root, progress=not args.quiet)
    print((run_dir / "results.md").read_text())
    return 0


def _train(args: argparse.Namespace) -> int:
    from innerloop.config import load_config

    if _is_rl(Path(args.config)):
        return _train_rl(args)
    if _is_bilevel(Path(args.config)):
        return _train_bilevel(args)
    config = load_config(args.config, args.set)
    run_dir = Path(args.run_dir or Path("runs") / config.name)
    return _train_and_report(config, run_dir, args.data_root, progress=not args.quiet,
                             evaluate=not args.no_eval)


def _evaluation_overrides(args: argparse.Namespace, flags: tuple[str, ...]) -> list[str]:
    """``--set`` assignments, then ``eval.<flag>=value`` for each given flag (and ``--split``)."""
    overrides = list(args.set)
    overrides += [f"eval.{flag}={getattr(args, flag)}" for flag in flags if getattr(args, flag) is not None]
    if getattr(args, "split", None):
        overrides.append(f"data.test_split={args.split}")
    return overrides


def _eval(args: argparse.Namespace) -> int:
    from innerloop.evaluate.run import evaluate_run

    if _is_rl(Path(args.run_dir) / "config.yaml"):
        _require_rl_extra()
        from innerloop.rl.evaluate import evaluate_rl_run

        overrides = list(args.set)
        overrides += [f"eval.{key}={value}" for key, value in (("seed", args.seed), ("tasks", args.tasks),
                      ("episodes_per_task", args.episodes), ("steps", args.steps)) if value is not None]
        rl_report = evaluate_rl_run(args.run_dir, overrides)
        print(rl_report.markdown())
        print(f"written: {Path(args.run_dir) / 'eval'}.json and .md")
        return 0
    overrides = _evaluation_overrides(args, ("ways", "shots", "queries", "episodes", "seed", "dataset"))
    report = evaluate_run(args.run_dir, args.checkpoint, data_root=args.data_root, overrides=overrides)
    print(report.markdown())
    print(f"written: {Path(args.run_dir) / report.stem}.json and .md")
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from innerloop.evaluate.robustness import RobustnessSettings, robustness_run

    overrides = _evaluation_overrides(args, ("ways", "shots", "queries", "episodes", "seed"))
    requested = (args.label_noise, args.epsilon, args.imbalance)
    defaults = all(values is None for values in requested)  # no condition named: the default set

    def chosen(values: list[float] | None) -> tuple[float, ...] | None:
        return None if defaults else tuple(values or ())

    settings = RobustnessSettings(
        label_noise_rates=chosen(args.label_noise), epsilons=chosen(args.epsilon),
        pgd_steps=args.pgd_steps, step_size=args.step_size, random_start=args.random_start,
        imbalance_fractions=chosen(args.imbalance), minority_shots=args.minority_shots)
    report = robustness_run(args.run_dir, settings, args.checkpoint, data_root=args.data_root,
                            overrides=overrides)
    print(report.markdown())
    print(f"written: {Path(args.run_dir) / report.stem}.json and .md")
    return 0


def _out_of_scope(args: argparse.Namespace) -> int:
    from innerloop.evaluate.out_of_scope import out_of_scope_run

    overrides = _evaluation_overrides(args, ("episodes",))
    report = out_of_scope_run(args.run_dir, args.checkpoint, data_root=args.data_root,
                              oos_queries=args.oos_queries, overrides=overrides)
    print(report.markdown())
    print(f"written: {Path(args.run_dir) / report.stem}.json and .md")
    return 0


def _list(args: argparse.Namespace) -> int:
    from innerloop.algorithms import ALGORITHMS
    from innerloop.data import DATASETS
    from innerloop.nn import BACKBONES

    print("algorithms:")
    for name, cls in sorted(ALGORITHMS.items()):
        family = cls.__module__.split(".")[-2]  # innerloop.algorithms.<family>.<method>
        print(f"  {name:12s} {family}, {'transductive' if cls.transductive else 'inductive'}")
    print("backbones:  " + ", ".join(sorted(BACKBONES)))
    print("datasets:")
    for name, spec in sorted(DATASETS.items()):
        print(f"  {name:12s} splits: {', '.join(spec.splits)}")
    from innerloop.rl.config import ALGORITHMS as RL_ALGORITHMS
    from innerloop.rl.envs import ENVIRONMENTS

    print("meta-RL algorithms:  " + ", ".join(RL_ALGORITHMS))
    print("meta-RL environments: " + ", ".join(ENVIRONMENTS))
    from innerloop.bilevel.recipe import EXPERIMENTS

    print("hyperparameter experiments (innerloop.bilevel): " + ", ".join(EXPERIMENTS))
    if RECIPES.is_dir():
        print("recipes:")
        for recipe in sorted(RECIPES.rglob("*.yaml")):
            print(f"  {recipe.relative_to(RECIPES.parent)}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    root = RECIPES.parent
    if not (root / "benchmarks" / "suite.py").is_file():
        raise InnerloopError("innerloop bench runs the benchmark suite of a source checkout "
                             "(benchmarks/ next to src/); clone the repository and run it there")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.suite import main as suite

    suite(args.options)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from innerloop.config import config_from_dict
    from innerloop.demo import DEMO_STEPS, SINUSOID_DEMO_STEPS, demo_config, sinusoid_demo_config

    config = config_from_dict(demo_config(args.steps or DEMO_STEPS))
    print(f"innerloop demo (1/2): ProtoNet, Conv-4, Omniglot; {config.train.steps} steps of "
          f"{config.train.ways}-way {config.train.shots}-shot training, then "
          f"{config.eval.ways}-way {config.eval.shots}-shot test on {config.eval.episodes} "
          f"fixed episodes.")
    _train_and_report(config, Path(args.run_dir), args.data_root, progress=True)

    sinusoid = config_from_dict(sinusoid_demo_config(args.sinusoid_steps or SINUSOID_DEMO_STEPS))
    run_dir = Path(args.run_dir).with_name(Path(args.run_dir).name + "-sinusoid")
    print(f"\ninnerloop demo (2/2): MAML, MLP(40, 40), sinusoid regression; {sinusoid.train.steps} "
          f"steps of {sinusoid.train.shots}-shot training, then the test MSE after 0, 1 and 10 "
          f"inner steps on {sinusoid.eval.episodes} fixed tasks.")
    _train_and_report(sinusoid, run_dir, args.data_root, progress=True)
    print(f"plot of the fits before and after adaptation: {_plot_sinusoid(sinusoid, run_dir)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from innerloop.evaluate.comparison_report import write_comparison_report

    files = write_comparison_report(args.run_dirs, args.out, args.title)
    print(f"written: {files.html}")
    print(f"written: {files.markdown}" + (f" (with {len(files.figures)} PNG figure"
                                          f"{'s' if len(files.figures) != 1 else ''} next to it)"
                                          if files.figures else ""))
    return 0


def _plot_sinusoid(config: Config, run_dir: Path) -> Path:
    from innerloop.build import build_learner, build_sampler, load_splits
    from innerloop.evaluate.plots import plot_regression_fits
    from innerloop.train.checkpoint import BEST, load_checkpoint

    learner = build_learner(config)
    learner.load_state_dict(load_checkpoint(run_dir / BEST)["model"])
    split = load_splits(config, None, [config.data.test_split])[config.data.test_split]
    tasks = build_sampler(config, split, 1, config.eval.shots, config.eval.queries)
    return plot_regression_fits(learner, tasks, run_dir / "fits.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="innerloop", description="Meta-learning in PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="meta-train a recipe, then evaluate its best checkpoint",
        description="Meta-train a recipe, then evaluate its best checkpoint. Distributed over N "
                    "processes: torchrun --standalone --nproc_per_node N -m innerloop train CONFIG "
                    "--set num_threads=1 (each rank runs num_threads threads on its slice of "
                    "every meta-batch).")
    train.add_argument("config", help="YAML recipe, e.g. configs/omniglot/protonet-5w1s.yaml")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.steps=500 (repeatable)")
    train.add_argument("--run-dir", help="run folder (default runs/<config name>); resumed if it holds a checkpoint")
    train.add_argument("--data-root", help="folder holding <dataset>/ sub-folders (default $INNERLOOP_DATA)")
    train.add_argument("--no-eval", action="store_true", help="skip the test evaluation after training")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="score a run on fixed seeded test episodes")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--checkpoint", default="best", choices=("best", "last"),
                          help="which checkpoint to score (meta-RL runs keep last.pt only)")
    evaluate.add_argument("--episodes", type=int, help="test episodes (meta-RL runs: episodes per task and step)")
    evaluate.add_argument("--tasks", type=int, help="meta-RL runs: number of fixed test tasks")
    evaluate.add_argument("--steps", type=int, help="meta-RL runs: report after 0..STEPS adaptation steps")
    evaluate.add_argument("--ways", type=int)
    evaluate.add_argument("--shots", type=int)
    evaluate.add_argument("--queries", type=int)
    evaluate.add_argument("--seed", type=int)
    evaluate.add_argument("--split", help="dataset split to score on (default: the run's data.test_split)")
    evaluate.add_argument("--dataset", help="cross-domain: score on this dataset's test split instead, "
                                            "e.g. fashion-mnist for an Omniglot run")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override an eval.* key")
    evaluate.add_argument("--data-root")
    evaluate.set_defaults(handler=_eval)

    robustness = commands.add_parser(
        "robustness", help="score a run on fixed test episodes with noisy, adversarial or imbalanced support sets",
        description="Score a run's checkpoint on its fixed seeded test episodes, clean and with the "
                    "support sets perturbed: symmetric label noise, PGD within an L-infinity ball "
                    "(through the method's adaptation) and class imbalance (see "
                    "innerloop.evaluate.robustness). Without --label-noise, --epsilon or --imbalance "
                    "the default set runs (label noise 0.2 and 0.4, epsilon 0.1, imbalance 0.4); "
                    "naming any of them runs only those named.")
    robustness.add_argument("run_dir")
    robustness.add_argument("--checkpoint", default="best", choices=("best", "last"))
    robustness.add_argument("--label-noise", type=float, nargs="*", metavar="RATE",
                            help="support label-noise rates, e.g. 0.2 0.4")
    robustness.add_argument("--epsilon", type=float, nargs="*", metavar="EPS",
                            help="L-infinity radii of the adversarial support sets, e.g. 0.1")
    robustness.add_argument("--pgd-steps", type=int, default=5, help="PGD steps per attack (default 5)")
    robustness.add_argument("--step-size", type=float, default=None,
                            help="PGD step size (default 2.5 * epsilon / steps)")
    robustness.add_argument("--random-start", action="store_true",
                            help="start PGD at a uniform point of the ball (default: the clean images)")
    robustness.add_argument("--imbalance", type=float, nargs="*", metavar="FRACTION",
                            help="fractions of the ways that keep only --minority-shots support examples")
    robustness.add_argument("--minority-shots", type=int, default=1,
                            help="support examples kept by minority classes (default 1)")
    robustness.add_argument("--episodes", type=int)
    robustness.add_argument("--ways", type=int)
    robustness.add_argument("--shots", type=int)
    robustness.add_argument("--queries", type=int)
    robustness.add_argument("--seed", type=int)
    robustness.add_argument("--split", help="dataset split to score on (default: the run's data.test_split)")
    robustness.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override an eval.* key, num_threads or inner.eval_steps")
    robustness.add_argument("--data-root")
    robustness.set_defaults(handler=_robustness)

    out_of_scope = commands.add_parser(
        "out-of-scope", help="CLINC150 runs: in-scope accuracy and out-of-scope recall when the "
                             "adapted learner may answer 'none of these'")
    out_of_scope.add_argument("run_dir")
    out_of_scope.add_argument("--checkpoint", default="best", choices=("best", "last"))
    out_of_scope.add_argument("--oos-queries", type=int, default=15,
                              help="out-of-scope utterances added to each episode's queries (default 15)")
    out_of_scope.add_argument("--episodes", type=int)
    out_of_scope.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                              help="override an eval.* key")
    out_of_scope.add_argument("--data-root")
    out_of_scope.set_defaults(handler=_out_of_scope)

    listing = commands.add_parser("list", help="algorithms, backbones, datasets and recipes")
    listing.set_defaults(handler=_list)

    bench = commands.add_parser(
        "bench", help="the benchmark suite: speed and memory against references (python -m benchmarks)",
        description="Run the benchmark suite; options after `bench` go to it, e.g. "
                    "innerloop bench --methods maml protonet --skip-sampler. See python -m benchmarks --help.")
    bench.add_argument("options", nargs=argparse.REMAINDER, help="options of the suite")
    bench.set_defaults(handler=_bench)

    demo = commands.add_parser("demo", help="train and evaluate a ProtoNet on Omniglot and MAML on "
                                             "sinusoids in a few minutes")
    demo.add_argument("--data-root")
    demo.add_argument("--run-dir", default="runs/demo")
    demo.add_argument("--steps", type=int, default=None, help="ProtoNet training steps")
    demo.add_argument("--sinusoid-steps", type=int, default=None, help="MAML sinusoid training steps")
    demo.set_defaults(handler=_demo)

    report = commands.add_parser(
        "report", help="compare runs on one self-contained HTML page (and Markdown)",
        description="Compare run directories: their settings, every evaluation report, learning "
                    "curves, reliability diagrams and robustness, written as report.html (one file, "
                    "figures inlined) and report.md with its PNG figures.")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run folders written by innerloop train, e.g. runs/maml-5w1s")
    report.add_argument("--out", default="report", help="folder to write into (default: ./report)")
    report.add_argument("--title", help="page title (default: innerloop: comparison of N runs)")
    report.set_defaults(handler=_report)
    return parser


def _program() -> str:
    """``innerloop``, or ``innerloop (rank R)`` in a process that torchrun started as rank R > 0."""
    rank = os.environ.get("RANK", "0")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or rank == "0":
        return "innerloop"
    return f"innerloop (rank {rank})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["bench"] and not {"-h", "--help"} & set(argv[1:2]):
        # The suite's own options (``--methods ...``) pass through untouched.
        args = argparse.Namespace(handler=_bench, options=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except InnerloopError as error:
        print(f"{_program()}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{_program()}: interrupted; the run's last.pt holds the last completed step",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
