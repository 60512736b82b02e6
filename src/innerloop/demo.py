"""``innerloop demo``: meta-train a ProtoNet on real Omniglot for a few minutes, then score it.

Trains 20-way 1-shot episodes (more ways than tested, as Snell et al. 2017 recommend) for
``DEMO_STEPS`` steps on 2 cores and evaluates 5-way 1-shot on 1000 fixed test episodes.
"""

from __future__ import annotations

from pathlib import Path

from innerloop.config import config_from_dict
from innerloop.evaluate.run import evaluate_run
from innerloop.train.trainer import Trainer

DEMO_STEPS = 1500


def demo_config(steps: int = DEMO_STEPS) -> dict:
    return {
        "name": "demo",
        "data": {"dataset": "omniglot", "download": True},
        "model": {"algorithm": "protonet", "backbone": "conv4"},
        "optim": {"name": "adam", "lr": 1e-3, "schedule": "step", "step_size": max(1, steps // 3),
                  "gamma": 0.5},
        "train": {"steps": steps, "ways": 20, "shots": 1, "queries": 5, "log_every": 100,
                  "val_every": max(1, steps // 3), "val_episodes": 200,
                  "checkpoint_every": max(1, steps // 6)},
        "eval": {"ways": 5, "shots": 1, "queries": 15, "episodes": 1000},
    }


def run_demo(data_root: str | None = None, run_dir: str = "runs/demo", steps: int | None = None) -> int:
    config = config_from_dict(demo_config(steps or DEMO_STEPS))
    print(f"innerloop demo: ProtoNet, Conv-4, Omniglot; {config.train.steps} steps of "
          f"{config.train.ways}-way {config.train.shots}-shot training, then 5-way 1-shot test "
          f"on {config.eval.episodes} fixed episodes. Run folder: {run_dir}")
    result = Trainer(config, Path(run_dir), data_root=data_root).fit()
    print(f"trained {result.steps} steps in {result.seconds:.0f} s; best validation accuracy "
          f"{100 * result.best_val_accuracy:.2f}% (step {result.best_step})")
    report = evaluate_run(run_dir, "best", data_root=data_root)
    print(report.markdown())
    return 0
