"""Bernoulli bandits, K = 5 arms and N = 100 pulls: RL² and MAML beside the SNAIL paper's table.

Each task is a ``K``-armed bandit with arm probabilities ``p ~ U[0, 1]`` (the ``bandit``
environment, one pull per episode); a method's score on a task is its total reward over ``N``
pulls. All methods are scored on the same ``--test-tasks`` seeded tasks (drawn with a seed no
training batch uses); the table gives the mean ± the 95% interval over tasks.

* **RL²** (:class:`innerloop.rl.algorithms.rl2.RL2`): a trial is the ``N`` pulls of one task; the
  GRU policy is trained with PPO on batches of trials and evaluated with sampled actions.
* **MAML** (:class:`innerloop.rl.algorithms.maml_trpo.MAMLTRPO`, ``CategoricalMLPPolicy``): a
  trial is ``M`` pre-update pulls with ``θ``, one policy-gradient step on them, then ``N - M``
  pulls with the adapted ``θ'``; the score counts all ``N`` pulls (the exploration pulls cost
  reward, as they do for RL², which explores inside its own trial). Training is MAML-TRPO with
  ``M`` pulls before and ``M`` after the step (the post-update objective is the mean reward per
  pull, which does not depend on how many pulls estimate it).
* **References** computed here on the same tasks, nothing learned: uniformly random pulls,
  Thompson sampling (Beta(1, 1) priors), UCB1 (Auer et al. 2002: each arm once, then
  ``argmax mean_i + sqrt(2 ln t / n_i)``) and the best arm in hindsight (always the arm with the
  largest ``p``; its expectation is ``N·K/(K+1)``).

Both learners keep the weights that scored best on ``--validation-tasks`` tasks of their own seed
(the same protocol, checked every ``--validate-every`` iterations, counted in the training time)
and are tested with those: MAML-TRPO's post-update gain can vanish later in training (its
meta-gradient ignores how the pre-update policy's pulls depend on ``θ``, so nothing stops that
policy from becoming deterministic, after which one gradient step has nothing to learn from).

Published (Mishra et al. 2018, SNAIL, Table 3, N = 100, K = 5; the RL² ("LSTM"), random and
Gittins entries are copied there from Duan et al. 2016): Gittins 78.3, random 49.9, RL² 78.7,
MAML 67.1 ± 1.1, SNAIL 79.1 ± 1.0.

    python -m benchmarks.rl_bandits [--methods rl2,maml,references] [--rl2-iterations 2400]
        [--maml-iterations 1000] [--arms 5] [--pulls 100] [--test-tasks 1000] [--table]

Runs on one thread (``torch.set_num_threads(1)``); training cost is recorded as CPU time (the
process's, ``time.process_time``) beside wall time, since a shared machine stretches the latter.
``--methods`` runs a subset and merges its rows into an existing JSON; ``--table`` writes the
Markdown table next to the JSON and prints it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from innerloop.evaluate.protocol import mean_and_ci95
from innerloop.rl.adaptation import child_seed
from innerloop.rl.algorithms.maml_trpo import MAMLTRPO
from innerloop.rl.algorithms.rl2 import RL2
from innerloop.rl.envs import make_env
from innerloop.rl.policies import CategoricalMLPPolicy
from innerloop.rl.rollout import VectorRollout

RESULTS = Path(__file__).parent / "results"
TEST_SEED = 2_000_000_011
VALIDATION_SEED = 1_000_000_007
PUBLISHED = {"source": "Mishra et al. 2018 (SNAIL), Table 3, N = 100, K = 5; the LSTM (RL²), random and Gittins "
                       "entries there are Duan et al. 2016's",
             "gittins": 78.3, "random": 49.9, "rl2": 78.7, "maml": [67.1, 1.1], "snail": [79.1, 1.0]}
METHODS = ("rl2", "maml", "references")


# --- references ----------------------------------------------------------------------------------
def reference_rewards(probabilities: np.ndarray, pulls: int, rule: str, seed: int) -> np.ndarray:
    """Reward of each pull of each task under a fixed bandit rule, ``[num_tasks, pulls]``."""
    generator = np.random.default_rng(seed)
    num_tasks, num_arms = probabilities.shape
    rows = np.arange(num_tasks)
    successes = np.zeros((num_tasks, num_arms))
    counts = np.zeros((num_tasks, num_arms))
    rewards = np.zeros((num_tasks, pulls))
    best = probabilities.argmax(1)
    for t in range(pulls):
        if rule == "random":
            arms = generator.integers(0, num_arms, size=num_tasks)
        elif rule == "thompson":
            arms = generator.beta(1.0 + successes, 1.0 + counts - successes).argmax(1)
        elif rule == "ucb1":
            if t < num_arms:
                arms = np.full(num_tasks, t)
            else:
                bonus = np.sqrt(2.0 * math.log(t) / counts)
                arms = (successes / counts + bonus).argmax(1)
        elif rule == "oracle":
            arms = best
        else:
            raise ValueError(f"unknown rule {rule}")
        reward = (generator.random(num_tasks) < probabilities[rows, arms]).astype(np.float64)
        successes[rows, arms] += reward
        counts[rows, arms] += 1
        rewards[:, t] = reward
    return rewards


# --- model selection -------------------------------------------------------------------------------
class Checkpoint:
    """The policy weights with the best validation score so far (ties keep the earlier)."""

    def __init__(self, policy: torch.nn.Module) -> None:
        self.policy = policy
        self.score = -math.inf
        self.iteration = 0
        self.state = copy.deepcopy(policy.state_dict())

    def offer(self, score: float, iteration: int) -> None:
        if score > self.score:
            self.score, self.iteration, self.state = score, iteration, copy.deepcopy(self.policy.state_dict())

    def restore(self) -> None:
        self.policy.load_state_dict(self.state)


def _validation_tasks(args: argparse.Namespace) -> list[dict]:
    return make_env("bandit", num_arms=args.arms).sample_tasks(args.validation_tasks, seed=VALIDATION_SEED)


# --- RL² -------------------------------------------------------------------------------------------
def run_rl2(args: argparse.Namespace, test_tasks: list[dict]) -> dict:
    torch.manual_seed(args.seed)
    env = make_env("bandit", num_arms=args.arms)
    learner = RL2(lambda: make_env("bandit", num_arms=args.arms), episodes_per_trial=args.pulls,
                  hidden_size=args.rl2_hidden, lr=args.rl2_lr, gamma=args.rl2_gamma, gae_lambda=args.rl2_gae_lambda,
                  entropy_coef=args.rl2_entropy, ppo_epochs=args.rl2_epochs, num_minibatches=args.rl2_minibatches)
    validation_tasks = _validation_tasks(args)
    best = Checkpoint(learner.policy)
    start, cpu_start = time.perf_counter(), time.process_time()
    curve = []
    for iteration in range(args.rl2_iterations):
        tasks = env.sample_tasks(args.rl2_batch, seed=10_000_000 + args.seed * 100_000 + iteration)
        stats = learner.train_step(tasks, seed=args.seed * 100_000 + iteration)
        if (iteration + 1) % args.validate_every == 0 or iteration == args.rl2_iterations - 1:
            validation = float(learner.evaluate_tasks(validation_tasks, args.pulls, seed=VALIDATION_SEED).sum(0).mean())
            best.offer(validation, iteration + 1)
            curve.append([iteration + 1, round(stats["trial_return"], 3), round(validation, 3)])
            print(f"RL² {iteration + 1}: trial return {stats['trial_return']:.2f}, validation {validation:.2f}, "
                  f"entropy {stats['entropy']:.3f}, kl {stats['approx_kl']:.4f} "
                  f"({time.process_time() - cpu_start:.0f} s CPU, {time.perf_counter() - start:.0f} s wall)", flush=True)
    cpu_seconds, seconds = time.process_time() - cpu_start, time.perf_counter() - start
    best.restore()
    if args.save_dir:
        torch.save(learner.state_dict(), Path(args.save_dir) / "rl2.pt")
    per_pull = torch.cat([learner.evaluate_tasks(test_tasks[i:i + 250], args.pulls, seed=TEST_SEED + i)
                          for i in range(0, len(test_tasks), 250)], dim=1).T.double()
    return _row("rl2", "RL² (GRU, PPO)", per_pull, {
        "cpu_seconds": round(cpu_seconds), "wall_seconds": round(seconds), "iterations": args.rl2_iterations,
        "trials_per_iteration": args.rl2_batch,
        "pulls": args.rl2_iterations * args.rl2_batch * args.pulls, "hidden_size": args.rl2_hidden,
        "lr": args.rl2_lr, "gamma": args.rl2_gamma, "gae_lambda": args.rl2_gae_lambda,
        "entropy_coef": args.rl2_entropy, "ppo_epochs": args.rl2_epochs, "minibatches": args.rl2_minibatches,
        "selected_iteration": best.iteration, "training_curve [iteration, batch trial return, validation]": curve})


# --- MAML ------------------------------------------------------------------------------------------
def maml_trial_rewards(learner: MAMLTRPO, rollout: VectorRollout, tasks: list[dict], pre_pulls: int, pulls: int,
                       seed: int) -> torch.Tensor:
    """Reward of each pull, ``[num_tasks, pulls]``: ``pre_pulls`` with ``θ``, one inner step, the rest with ``θ'``."""
    params = [learner.initial_params(detach=True) for _ in tasks]
    before = rollout.sample(learner.policy, params, tasks, pre_pulls, seed=child_seed(seed, 0))
    adapted = [{name: value.detach() for name, value in
                learner.inner_update(params[i], episodes, learner.advantages(episodes), create_graph=False).items()}
               for i, episodes in enumerate(before)]
    after = rollout.sample(learner.policy, adapted, tasks, pulls - pre_pulls, seed=child_seed(seed, 1))
    return torch.stack([torch.cat([b.rewards[0], a.rewards[0]]) for b, a in zip(before, after)]).double()


def run_maml(args: argparse.Namespace, test_tasks: list[dict]) -> dict:
    if not 1 <= args.maml_pre_pulls < args.pulls:
        raise SystemExit(f"--maml-pre-pulls must lie in [1, {args.pulls - 1}], got {args.maml_pre_pulls}")
    torch.manual_seed(args.seed)
    env = make_env("bandit", num_arms=args.arms)
    policy = CategoricalMLPPolicy(1, args.arms, hidden_sizes=(args.maml_hidden, args.maml_hidden))
    learner = MAMLTRPO(policy, max_kl=args.maml_max_kl, inner_lr=args.maml_inner_lr, inner_steps=1, gamma=0.99,
                       gae_lambda=1.0)
    rollout = VectorRollout(lambda: make_env("bandit", num_arms=args.arms))
    validation_tasks = _validation_tasks(args)
    best = Checkpoint(learner.policy)
    start, cpu_start = time.perf_counter(), time.process_time()
    curve = []
    for iteration in range(args.maml_iterations):
        tasks = env.sample_tasks(args.maml_meta_batch, seed=20_000_000 + args.seed * 100_000 + iteration)
        batch = learner.collect(rollout, tasks, args.maml_pre_pulls, seed=args.seed * 100_000 + iteration)
        stats = learner.outer_step(batch)
        if (iteration + 1) % args.validate_every == 0 or iteration == args.maml_iterations - 1:
            pre = float(torch.stack([b.train[0].rewards.mean() for b in batch]).mean())
            post = float(torch.stack([b.valid.rewards.mean() for b in batch]).mean())
            validation = float(torch.cat([
                maml_trial_rewards(learner, rollout, validation_tasks[i:i + 100], args.maml_pre_pulls, args.pulls,
                                   seed=VALIDATION_SEED + i) for i in range(0, len(validation_tasks), 100)]).sum(1).mean())
            best.offer(validation, iteration + 1)
            curve.append([iteration + 1, round(pre, 4), round(post, 4), round(validation, 3)])
            print(f"MAML {iteration + 1}: reward a pull before {pre:.3f}, after {post:.3f}, validation {validation:.2f}, "
                  f"accepted {stats['accepted']:.0f} ({time.process_time() - cpu_start:.0f} s CPU, "
                  f"{time.perf_counter() - start:.0f} s wall)", flush=True)
    cpu_seconds, seconds = time.process_time() - cpu_start, time.perf_counter() - start
    best.restore()
    if args.save_dir:
        torch.save(learner.state_dict(), Path(args.save_dir) / "maml.pt")
    per_pull = torch.cat([maml_trial_rewards(learner, rollout, test_tasks[i:i + 100], args.maml_pre_pulls, args.pulls,
                                             seed=TEST_SEED + i) for i in range(0, len(test_tasks), 100)])
    return _row("maml", f"MAML (TRPO; {args.maml_pre_pulls} pulls, 1 step, {args.pulls - args.maml_pre_pulls} pulls)",
                per_pull, {"cpu_seconds": round(cpu_seconds), "wall_seconds": round(seconds),
                           "iterations": args.maml_iterations,
                           "meta_batch": args.maml_meta_batch, "pre_pulls": args.maml_pre_pulls,
                           "inner_lr": args.maml_inner_lr, "hidden_sizes": [args.maml_hidden] * 2,
                           "max_kl": args.maml_max_kl,
                           "pulls": args.maml_iterations * args.maml_meta_batch * 2 * args.maml_pre_pulls,
                           "selected_iteration": best.iteration,
                           "training_curve [iteration, batch reward a pull before, after, validation]": curve})


# --- report ----------------------------------------------------------------------------------------
def _row(key: str, name: str, per_pull: torch.Tensor, training: dict | None = None) -> dict:
    mean, ci95 = mean_and_ci95(per_pull.sum(1))
    row = {"key": key, "method": name, "total_reward": round(mean, 3), "ci95": round(ci95, 3),
           "mean_reward_per_pull": [round(float(v), 4) for v in per_pull.mean(0)]}
    if training is not None:
        row["training"] = training
    print(f"{name}: {mean:.2f} ± {ci95:.2f}", flush=True)
    return row


def run_references(args: argparse.Namespace, test_tasks: list[dict]) -> list[dict]:
    probabilities = np.array([task["probabilities"] for task in test_tasks])
    names = {"random": "Random", "thompson": "Thompson sampling", "ucb1": "UCB1", "oracle": "Best arm in hindsight"}
    return [_row(rule, name, torch.from_numpy(reference_rewards(probabilities, args.pulls, rule, TEST_SEED + i)))
            for i, (rule, name) in enumerate(names.items())]


PUBLISHED_BY_KEY = {"random": "49.9", "rl2": "78.7", "maml": "67.1 ± 1.1"}


def markdown_table(report: dict) -> str:
    lines = [f"Bernoulli bandits, K = {report['arms']}, N = {report['pulls']}: total reward over the N pulls, "
             f"mean ± 95% CI over {report['test_tasks']} test tasks ({report['date']}).", "",
             "| Method | Total reward (innerloop) | Published (SNAIL Table 3) | Training (one thread) |",
             "|---|---|---|---|"]
    for row in report["results"]:
        training = row.get("training")
        cost = (f"{training['cpu_seconds'] / 60:.0f} CPU min, {training['pulls'] / 1e6:.1f}M pulls; weights of iteration "
                f"{training['selected_iteration']} of {training['iterations']}" if training else "none")
        lines.append(f"| {row['method']} | {row['total_reward']:.1f} ± {row['ci95']:.1f} | "
                     f"{PUBLISHED_BY_KEY.get(row['key'], '—')} | {cost} |")
    lines.append("| Gittins index (published only) | — | 78.3 | — |")
    lines.append("| SNAIL (published only) | — | 79.1 ± 1.0 | — |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--pulls", type=int, default=100)
    parser.add_argument("--test-tasks", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rl2-iterations", type=int, default=2400)
    parser.add_argument("--rl2-batch", type=int, default=256, help="trials (tasks) per PPO iteration")
    parser.add_argument("--rl2-hidden", type=int, default=128)
    parser.add_argument("--rl2-lr", type=float, default=1e-3)
    parser.add_argument("--rl2-gamma", type=float, default=0.99)
    parser.add_argument("--rl2-gae-lambda", type=float, default=0.95)
    parser.add_argument("--rl2-entropy", type=float, default=0.01)
    parser.add_argument("--rl2-epochs", type=int, default=4)
    parser.add_argument("--rl2-minibatches", type=int, default=4)
    parser.add_argument("--maml-iterations", type=int, default=1000)
    parser.add_argument("--maml-meta-batch", type=int, default=40)
    parser.add_argument("--maml-pre-pulls", type=int, default=20, help="M: pulls before MAML's one inner step")
    parser.add_argument("--maml-inner-lr", type=float, default=0.5)
    parser.add_argument("--maml-hidden", type=int, default=100)
    parser.add_argument("--maml-max-kl", type=float, default=0.01, help="TRPO's trust region of the outer step")
    parser.add_argument("--validation-tasks", type=int, default=200)
    parser.add_argument("--validate-every", type=int, default=25, help="iterations between validations")
    parser.add_argument("--json", default=str(RESULTS / "rl_bandits.json"))
    parser.add_argument("--save-dir", help="write the trained RL² and MAML state dicts here")
    parser.add_argument("--table", action="store_true", help="write the Markdown table beside the JSON and print it")
    args = parser.parse_args()
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown --methods {unknown}; choose from {', '.join(METHODS)}")
    torch.set_num_threads(1)
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
    test_tasks = make_env("bandit", num_arms=args.arms).sample_tasks(args.test_tasks, seed=TEST_SEED)
    path = Path(args.json)
    settings = {"arms": args.arms, "pulls": args.pulls, "test_tasks": args.test_tasks, "test_seed": TEST_SEED}
    new_rows = []
    if "references" in methods:
        new_rows += run_references(args, test_tasks)
    if "rl2" in methods:
        new_rows.append(run_rl2(args, test_tasks))
    if "maml" in methods:
        new_rows.append(run_maml(args, test_tasks))
    report = json.loads(path.read_text()) if path.is_file() else {}  # read now: another run may have written it
    if {key: report.get(key) for key in settings} != settings:
        report = {}  # another setting: start afresh
    rows = {row["key"]: {"command": report.get("command"), "date": report.get("date"), **row}
            for row in report.get("results", [])}  # rows kept from an earlier run keep its command and date
    command, today = "python -m benchmarks.rl_bandits " + " ".join(sys.argv[1:]), time.strftime("%Y-%m-%d")
    rows.update({row["key"]: {**row, "command": command, "date": today} for row in new_rows})
    order = ["rl2", "maml", "thompson", "ucb1", "random", "oracle"]
    report = {"benchmark": "rl_bandits", **settings, "date": max(row["date"] for row in rows.values()),
              "commands": sorted({row["command"] for row in rows.values()}), "torch_threads": 1,
              "published": PUBLISHED, "results": sorted(rows.values(), key=lambda row: order.index(row["key"]))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    if args.table:
        table = markdown_table(report)
        path.with_suffix(".md").write_text(table)
        print(table)


if __name__ == "__main__":
    main()
