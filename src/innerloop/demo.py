"""The recipe of ``innerloop demo``: a ProtoNet on real Omniglot in a few minutes.

Trains 20-way 1-shot episodes (more ways than tested, as Snell et al. 2017 recommend) for
``DEMO_STEPS`` steps on 2 cores and evaluates 5-way 1-shot on 1000 fixed test episodes.
"""

from __future__ import annotations

DEMO_STEPS = 1500


def demo_config(steps: int = DEMO_STEPS) -> dict:
    """The demo's config as nested dicts (the command line validates and runs it)."""
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
