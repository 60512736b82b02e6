"""The recipes of ``innerloop demo``: two real meta-learners in a few minutes on 2 cores.

1. A ProtoNet on real Omniglot: 20-way 1-shot training episodes (more ways than tested, as
   Snell et al. 2017 recommend) for ``DEMO_STEPS`` steps, then 5-way 1-shot on 1000 fixed test
   episodes.
2. MAML on the sinusoid regression family (Finn et al. 2017) for ``SINUSOID_DEMO_STEPS`` steps
   (vmapped over tasks), then the test MSE after 0, 1 and 10 inner steps at K = 10, and a plot of
   the fits before and after adaptation (``fits.png`` in its run folder).
"""

from __future__ import annotations

DEMO_STEPS = 1500
SINUSOID_DEMO_STEPS = 6000


def demo_config(steps: int = DEMO_STEPS) -> dict:
    """The ProtoNet demo's config as nested dicts (the command line validates and runs it)."""
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


def sinusoid_demo_config(steps: int = SINUSOID_DEMO_STEPS) -> dict:
    """MAML on sinusoids with the paper's network and inner loop, on a shorter schedule."""
    return {
        "name": "demo-sinusoid",
        "num_threads": 2,
        "data": {"dataset": "sinusoid"},
        "model": {"algorithm": "maml", "backbone": "mlp", "hidden_sizes": [40, 40]},
        "inner": {"steps": 1, "eval_steps": 1, "lr": 0.01, "order": "second", "vectorize": True},
        "optim": {"name": "adam", "lr": 1e-3, "schedule": "constant"},
        "train": {"steps": steps, "meta_batch_size": 25, "ways": 1, "shots": 10, "queries": 10,
                  "log_every": max(1, steps // 20), "val_every": max(1, steps // 4),
                  "val_episodes": 200, "checkpoint_every": max(1, steps // 4)},
        "eval": {"ways": 1, "shots": 10, "queries": 100, "episodes": 600, "batch_size": 100,
                 "inner_steps": [0, 10]},
    }
