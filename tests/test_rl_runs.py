"""Meta-RL environments, rollouts, advantages, CAVIA's context adaptation, and whole runs:
seeded task sampling, set_task, masks, resumption after a crash, the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from innerloop.cli.main import main
from innerloop.errors import ConfigError
from innerloop.rl.adaptation import PolicyGradientMetaLearner
from innerloop.rl.advantages import generalized_advantages, linear_baseline_values
from innerloop.rl.algorithms.cavia_rl import CAVIATRPO
from innerloop.rl.config import rl_config_from_dict
from innerloop.rl.envs import make_env
from innerloop.rl.policies import CONTEXT, GaussianMLPPolicy
from innerloop.rl.rollout import Episodes, VectorRollout
from innerloop.rl.trainer import RLTrainer

SMALL = ["train.meta_batch_size=2", "train.episodes_per_task=3", "env.options={horizon: 6}",
         "policy.hidden_sizes=[8]", "eval.tasks=3", "eval.episodes_per_task=2", "eval.steps=1"]


@pytest.mark.parametrize("name", ["navigation-2d", "bandit", "tabular-mdp"])
def test_task_sampling_is_seeded(name):
    env = make_env(name)
    assert env.sample_tasks(4, seed=7) == env.sample_tasks(4, seed=7)
    assert env.sample_tasks(4, seed=7) != env.sample_tasks(4, seed=8)
    before = np.random.get_state()[1].copy()
    env.sample_tasks(3, seed=1)
    assert np.array_equal(before, np.random.get_state()[1])  # the global RNG is untouched


def test_navigation_set_task_moves_the_goal_and_ends_at_the_goal():
    env = make_env("navigation-2d")
    env.set_task({"goal": [0.3, -0.4]})
    env.reset(seed=0)
    _, reward, terminated, _, _ = env.step([0.1, -0.1])
    assert reward == pytest.approx(-np.hypot(0.2, -0.3)) and not terminated
    env.step([0.1, -0.1])
    _, reward, _, _, _ = env.step([5.0, -5.0])  # clipped to 0.1 per coordinate
    assert reward == pytest.approx(-0.1, abs=1e-6)
    env.step([0.0, -0.1])
    assert env.step([0.0, 0.0])[2]  # within 0.01 of the goal: the episode ends
    with pytest.raises(ValueError, match="goal"):
        env.set_task({"target": [0, 0]})


def test_bandit_and_tabular_mdp_follow_their_task():
    bandit = make_env("bandit", num_arms=3)
    bandit.set_task({"probabilities": [0.0, 1.0, 0.25]})
    bandit.reset(seed=0)
    assert [bandit.step(1)[1] for _ in range(20)] == [1.0] * 20
    assert [bandit.step(0)[1] for _ in range(20)] == [0.0] * 20
    assert np.mean([bandit.step(2)[1] for _ in range(4000)]) == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="probabilities"):
        bandit.set_task({"probabilities": [0.5, 1.5, 0.0]})
    mdp = make_env("tabular-mdp", num_states=3, num_actions=2, horizon=4)
    transitions = [[[0, 0, 1], [0, 1, 0]], [[1, 0, 0], [1, 0, 0]], [[0, 0, 1], [0, 0, 1]]]
    mdp.set_task({"transitions": transitions, "mean_rewards": [[0, 0], [5, 5], [-5, -5]]})
    observation, _ = mdp.reset(seed=0)
    assert observation.tolist() == [1, 0, 0]
    observation, _, _, _, _ = mdp.step(1)
    assert observation.tolist() == [0, 1, 0]
    _, reward, _, _, _ = mdp.step(0)
    assert abs(reward - 5) < 6  # N(5, 1)


def test_rollouts_are_seeded_masked_and_leave_global_rngs_alone():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(4,))
    params = dict(policy.named_parameters())
    rollout = VectorRollout(lambda: make_env("navigation-2d", horizon=30, goal_tolerance=0.3))
    tasks = [{"goal": [0.05, 0.05]}, {"goal": [0.4, -0.4]}]
    state = torch.get_rng_state()
    first = rollout.sample(policy, [params, params], tasks, 5, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    second = rollout.sample(policy, [params, params], tasks, 5, seed=3)
    other = rollout.sample(policy, [params, params], tasks, 5, seed=4)
    assert all(torch.equal(a.actions, b.actions) and torch.equal(a.rewards, b.rewards) for a, b in zip(first, second))
    assert not torch.equal(first[0].actions, other[0].actions)
    near = first[0]  # a goal within reach of the tolerance: some episodes end early
    lengths = near.mask.sum(0)
    assert lengths.min() < 30 and torch.all(near.mask[1:] <= near.mask[:-1])
    assert torch.all(near.rewards[near.mask == 0] == 0)
    assert first[1].task == tasks[1]


def test_returns_baseline_and_advantages():
    rewards = torch.tensor([[1.0, 2.0], [1.0, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    episodes = Episodes(torch.zeros(3, 2, 1), torch.zeros(3, 2, 1), rewards, mask, {})
    torch.testing.assert_close(episodes.returns_to_go(0.5), torch.tensor([[1.75, 2.0], [1.5, 0.0], [1.0, 0.0]]))
    values = torch.tensor([[0.5, 1.0], [0.5, 0.0], [0.5, 0.0]])
    raw = generalized_advantages(episodes, values, gamma=0.5, gae_lambda=1.0, normalize=False)
    torch.testing.assert_close(raw, episodes.returns_to_go(0.5) - values)
    one_step = generalized_advantages(episodes, values, gamma=0.5, gae_lambda=0.0, normalize=False)
    torch.testing.assert_close(one_step, torch.tensor([[0.75, 1.0], [0.75, 0.0], [0.5, 0.0]]))  # r + γ V_next - V
    normalized = generalized_advantages(episodes, values, gamma=0.5, normalize=True)
    assert float((normalized * mask).sum()) == pytest.approx(0.0, abs=1e-5)
    # returns that are a quadratic in the observation: the linear feature baseline fits them exactly
    observations = torch.linspace(-1, 1, 12).view(3, 4, 1)
    target = 2 * observations[..., 0] ** 2 - observations[..., 0] + 0.5
    rewards = target.clone()
    rewards[:-1] -= target[1:]  # so that the undiscounted return-to-go is exactly `target`
    quadratic = Episodes(observations, torch.zeros(3, 4, 1), rewards, torch.ones(3, 4), {})
    torch.testing.assert_close(linear_baseline_values(quadratic, gamma=1.0, regularization=1e-10), target,
                               atol=1e-4, rtol=0)


def test_cavia_adapts_only_the_context_from_zero():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,), context_dim=3)
    learner = CAVIATRPO(policy, inner_lr=5.0)
    rollout = VectorRollout(lambda: make_env("navigation-2d", horizon=6))
    batch = learner.collect(rollout, [{"goal": [0.4, 0.4]}], 4, seed=0)
    initial = learner.initial_params()
    assert torch.equal(initial[CONTEXT], torch.zeros(3))
    adapted = learner.adapt(initial, batch[0], create_graph=True)
    assert not torch.equal(adapted[CONTEXT], torch.zeros(3))
    assert all(adapted[name] is initial[name] for name in initial if name != CONTEXT)
    meta_gradient = torch.autograd.grad(adapted[CONTEXT].sum(), [initial["head.weight"]])[0]
    assert meta_gradient.abs().sum() > 0  # the context's update depends on θ: second order reaches θ
    with pytest.raises(ValueError, match="context_dim"):
        PolicyGradientMetaLearner(GaussianMLPPolicy(2, 2, hidden_sizes=(4,)), adapt="context")


def test_a_crashed_run_resumes_to_the_same_parameters(tmp_path):
    config = rl_config_from_dict({"env": {"name": "navigation-2d"}}, SMALL + ["train.iterations=3",
                                                                             "train.checkpoint_every=1"])
    straight = tmp_path / "straight"
    RLTrainer(config, straight, progress=False).fit()
    interrupted = tmp_path / "interrupted"
    short = rl_config_from_dict(config.to_dict(), ["train.iterations=2"])
    RLTrainer(short, interrupted, progress=False).fit()
    with (interrupted / "metrics.jsonl").open("a") as log:  # a line written after the last checkpoint
        log.write(json.dumps({"iteration": 3, "return_before": 0.0, "return_after": 0.0}) + "\n")
    RLTrainer(config, interrupted, progress=False).fit()
    a = torch.load(straight / "last.pt", weights_only=True)["learner"]["policy"]
    b = torch.load(interrupted / "last.pt", weights_only=True)["learner"]["policy"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3]
    assert (straight / "learning_curve.png").stat().st_size > 1000
    for override, key in (("seed=5", "seed"), ("outer.max_kl=0.02", "outer.max_kl"),
                          ("train.meta_batch_size=3", "train.meta_batch_size")):
        with pytest.raises(Exception, match=f"different {key}"):
            RLTrainer(rl_config_from_dict(config.to_dict(), [override]), interrupted, progress=False).fit()
    longer = rl_config_from_dict(config.to_dict(), ["train.iterations=4", "eval.tasks=7"])
    RLTrainer(longer, interrupted, progress=False).fit()  # a longer run and another evaluation may resume
    assert len((interrupted / "metrics.jsonl").read_text().splitlines()) == 4


def test_command_line_trains_and_evaluates_an_rl_recipe(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "configs/rl/maml-trpo-navigation-2d.yaml", "--run-dir", str(run_dir), "--quiet",
            "--set", "train.iterations=1"]
    for override in SMALL:
        args += ["--set", override]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "maml-trpo on navigation-2d" in out and "| 1 |" in out
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["steps"] == [0, 1] and len(report["per_task_returns"][0]) == 3
    assert main(["eval", str(run_dir), "--tasks", "4", "--steps", "2"]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["steps"] == [0, 1, 2] and report["tasks"] == 4
    assert all(np.isfinite(report["mean_return"]))
    per_task = np.array(report["per_task_returns"])
    assert report["gain"][0] == 0 and report["gain"][2] == pytest.approx((per_task[2] - per_task[0]).mean())
    assert report["mean_return"][1] == pytest.approx(per_task[1].mean())


@pytest.mark.parametrize("override, message", [
    (["algorithm=maml"], "algorithm"), (["env.name=cartpole"], "env.name"), (["inner.lr=0"], "inner.lr"),
    (["algorithm=cavia"], "context_dim"), (["policy.context_dim=4"], "CAVIA"), (["inner.steps=0"], "pretrained"),
    (["train.iterations=0"], "train.iterations"), (["env.options=3"], "env.options"), (["train.steps=3"], "train.steps"),
    (["algorithm=promp", "outer.clip=1.5"], "outer.clip"), (["outer.grad_clip=0"], "outer.grad_clip"),
    (["outer.line_search_ratio=1.2"], "line_search_ratio"), (["outer.cg_damping=-1"], "cg_damping"),
    (["policy.hidden_sizes=[0]"], "hidden_sizes"), (["seed=-1"], "seed"), (["eval.seed=100000000000000000"], "eval.seed"),
    (["algorithm=rl2", "policy.hidden_sizes=[]"], "GRU"), (["num_threads=-2"], "num_threads"),
])
def test_bad_rl_recipes_are_refused_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        rl_config_from_dict({"env": {"name": "navigation-2d"}}, override)


def test_meta_world_runs_report_success_rates_on_the_test_goals(tmp_path):
    """One tiny MAML-TRPO iteration on ML1 reach-v3, evaluated on the held-out test split."""
    config = rl_config_from_dict(
        {"env": {"name": "metaworld-ml1", "options": {"task_name": "reach-v3", "split": "train", "horizon": 5}},
         "eval": {"env_options": {"split": "test"}}},
        ["train.iterations=1", "train.meta_batch_size=2", "train.episodes_per_task=2", "policy.hidden_sizes=[8]",
         "eval.tasks=2", "eval.episodes_per_task=2", "eval.steps=1"])
    RLTrainer(config, tmp_path, progress=False).fit()
    from innerloop.rl.evaluate import evaluate_rl_run

    report = evaluate_rl_run(tmp_path)
    assert report.env_options["split"] == "test" and len(report.success_rate) == 2
    assert all(0.0 <= rate <= 1.0 for rate in report.success_rate)
    assert "success rate" in report.markdown()


def test_rl2_runs_through_the_command_line(tmp_path, capsys):
    """An RL² recipe trains and reports the return of each episode of a trial."""
    run_dir = tmp_path / "rl2"
    assert main(["train", "configs/rl/rl2-bandit-k5-n100.yaml", "--run-dir", str(run_dir), "--quiet",
                 "--set", "train.iterations=2", "--set", "train.meta_batch_size=8", "--set",
                 "train.episodes_per_trial=4", "--set", "policy.hidden_sizes=[8]", "--set", "eval.tasks=5"]) == 0
    assert "episode of the trial" in capsys.readouterr().out
    from innerloop.rl.build import build_rl_learner
    from innerloop.rl.trainer import load_run_config

    config = load_run_config(run_dir)
    learner = build_rl_learner(config, make_env("bandit"), {"num_arms": 3})
    assert learner.rl2.sampler.envs[0].num_arms == 3  # RL² evaluates in the evaluation's environment
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["steps"] == [0, 1, 2, 3] and len(report["per_task_returns"][0]) == 5
    assert all(0.0 <= value <= 1.0 for row in report["per_task_returns"] for value in row)  # one Bernoulli pull


def test_without_gymnasium_the_names_load_and_the_error_names_the_extra(tmp_path):
    """`innerloop list` and recipe validation need no gymnasium; building an environment says what to install."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['gymnasium'] = None\n"
        "from innerloop.rl.envs import ENVIRONMENTS, make_env\n"
        "from innerloop.rl.config import rl_config_from_dict\n"
        "rl_config_from_dict({'env': {'name': 'navigation-2d'}})\n"
        "from innerloop.errors import MissingExtraError\n"
        "try:\n    make_env('navigation-2d')\nexcept MissingExtraError as error:\n    print('refused:', error)\n"
        "from innerloop.cli.main import main\n"
        f"print('exit', main(['train', 'configs/rl/maml-trpo-navigation-2d.yaml', '--run-dir', r'{tmp_path}']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "refused:" in result.stdout and "pip install 'innerloop[rl]'" in result.stdout, result.stderr
    assert "exit 2" in result.stdout and "innerloop[rl]" in result.stderr and "Traceback" not in result.stderr
