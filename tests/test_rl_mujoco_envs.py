"""The MuJoCo (HalfCheetah, Ant) and Meta-World ML1 task distributions of innerloop.rl.

The rewards are checked against gymnasium's own v5 bodies stepped with the same seed and
actions, so the forward velocity, the initial-state noise and the reward terms are the
simulator's, not re-derived by the test.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from innerloop.rl.envs import make_env
from innerloop.rl.envs.ant import AntDirection
from innerloop.rl.envs.halfcheetah import HalfCheetahDirection, HalfCheetahVelocity
from innerloop.rl.envs.metaworld_ml1 import MetaWorldML1


def _actions(count: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(count, dim))


def _run(env, task: dict, actions: np.ndarray, seed: int = 7) -> tuple[np.ndarray, list[float], list[dict]]:
    env.set_task(task)
    first, _ = env.reset(seed=seed)
    rewards, infos = [], []
    for action in actions:
        _, reward, terminated, _, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
        assert not terminated
    return first, rewards, infos


# --- task sampling -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["halfcheetah-velocity", "halfcheetah-direction", "ant-direction"])
def test_locomotion_tasks_are_seeded_and_json(name):
    env = make_env(name)
    tasks = env.sample_tasks(20, seed=3)
    assert tasks == env.sample_tasks(20, seed=3)
    assert tasks != env.sample_tasks(20, seed=4)
    assert json.loads(json.dumps(tasks)) == tasks


def test_velocity_tasks_cover_zero_to_two():
    velocities = np.array([task["velocity"] for task in HalfCheetahVelocity().sample_tasks(2000, seed=0)])
    assert velocities.min() >= 0.0 and velocities.max() <= 2.0
    # U[0, 2]: mean 1, standard error of the mean 0.577 / sqrt(2000) = 0.013
    assert abs(velocities.mean() - 1.0) < 0.05
    assert velocities.min() < 0.02 and velocities.max() > 1.98


def test_directions_are_plus_minus_one_equally_often():
    directions = [task["direction"] for task in HalfCheetahDirection().sample_tasks(2000, seed=0)]
    assert set(directions) == {1, -1}
    # Binomial(2000, 1/2): standard deviation 22.4; 100 is 4.5 of them
    assert abs(directions.count(1) - 1000) < 100


# --- spaces, seeding, horizon ----------------------------------------------------------------------

def test_halfcheetah_spaces_and_start_are_halfcheetah_v5s():
    body = HalfCheetahEnv()
    for env in (HalfCheetahVelocity(), HalfCheetahDirection()):
        assert env.observation_space == body.observation_space and env.observation_space.shape == (17,)
        assert env.action_space == body.action_space and env.action_space.shape == (6,)
        observation, info = env.reset(seed=11)
        assert np.array_equal(observation, body.reset(seed=11)[0])
        assert info["task"] == env.get_task()
    assert AntDirection().observation_space.shape == (105,) and AntDirection().action_space.shape == (8,)


def test_reset_seed_makes_the_initial_noise_reproducible():
    env = HalfCheetahVelocity()
    first, _ = env.reset(seed=5)
    again, _ = env.reset(seed=5)
    other, _ = env.reset(seed=6)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)
    # the noise is real: HalfCheetah-v5's unperturbed start observation is all zeros
    assert np.abs(first).max() > 0.01


def test_episode_is_truncated_at_the_horizon():
    env = make_env("halfcheetah-direction", horizon=5)
    assert env.horizon == 5 and HalfCheetahVelocity().horizon == 200 and AntDirection().horizon == 200
    env.reset(seed=0)
    flags = [env.step(np.zeros(6))[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(6))
    env.reset(seed=0)
    assert env.step(np.zeros(6))[3] is False


def test_bad_horizon_is_refused():
    with pytest.raises(ValueError, match="horizon must be at least 1"):
        make_env("halfcheetah-velocity", horizon=0)


# --- rewards -----------------------------------------------------------------------------------------

def test_forward_velocity_is_halfcheetah_v5s_and_the_velocity_reward_is_the_papers():
    actions = _actions(25, 6)
    env = HalfCheetahVelocity()
    _, rewards, infos = _run(env, {"velocity": 1.5}, actions)
    body = HalfCheetahEnv()
    body.reset(seed=7)
    for action, reward, info in zip(actions, rewards, infos):
        body_info = body.step(action)[4]
        assert info["forward_velocity"] == pytest.approx(body_info["x_velocity"], abs=1e-12)
        expected = -abs(body_info["x_velocity"] - 1.5) - 0.05 * float(np.sum(action ** 2))
        assert reward == pytest.approx(expected, abs=1e-12)


def test_changing_the_target_velocity_changes_only_the_velocity_term():
    actions = _actions(30, 6, seed=1)
    env = HalfCheetahVelocity()
    _, slow, infos = _run(env, {"velocity": 0.25}, actions)
    _, fast, _ = _run(env, {"velocity": 1.75}, actions)
    velocities = np.array([info["forward_velocity"] for info in infos])
    expected_gap = -np.abs(velocities - 0.25) + np.abs(velocities - 1.75)
    np.testing.assert_allclose(np.array(slow) - np.array(fast), expected_gap, atol=1e-12)
    assert np.abs(expected_gap).max() > 0.1


def test_direction_flip_negates_the_forward_term_and_matches_halfcheetah_v5():
    actions = _actions(30, 6, seed=2)
    env = HalfCheetahDirection()
    _, forward, infos = _run(env, {"direction": 1}, actions)
    _, backward, _ = _run(env, {"direction": -1}, actions)
    velocities = np.array([info["forward_velocity"] for info in infos])
    control = 0.05 * np.sum(actions ** 2, axis=1)
    np.testing.assert_allclose(np.array(forward) - np.array(backward), 2 * velocities, atol=1e-12)
    np.testing.assert_allclose(np.array(forward) + np.array(backward), -2 * control, atol=1e-12)
    # forward is HalfCheetah-v5's own reward with the papers' control weight 0.05
    body = HalfCheetahEnv(ctrl_cost_weight=0.05)
    body.reset(seed=7)
    np.testing.assert_allclose(forward, [body.step(action)[1] for action in actions], atol=1e-12)


def test_ant_forward_is_ant_v5s_reward_and_backward_flips_the_forward_term():
    actions = _actions(20, 8, seed=3)
    env = AntDirection()
    _, forward, infos = _run(env, {"direction": 1}, actions)
    _, backward, _ = _run(env, {"direction": -1}, actions)
    body = AntEnv()
    body.reset(seed=7)
    body_steps = [body.step(action) for action in actions]
    np.testing.assert_allclose(forward, [step[1] for step in body_steps], atol=1e-12)
    velocities = np.array([info["forward_velocity"] for info in infos])
    np.testing.assert_allclose(velocities, [step[4]["x_velocity"] for step in body_steps], atol=1e-12)
    np.testing.assert_allclose(np.array(forward) - np.array(backward), 2 * velocities, atol=1e-12)


# --- bad tasks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_class, task, message", [
    (HalfCheetahVelocity, {"goal": 1.0}, "lacks velocity"),
    (HalfCheetahVelocity, {"velocity": "fast"}, "finite number"),
    (HalfCheetahVelocity, {"velocity": float("nan")}, "finite number"),
    (HalfCheetahVelocity, {"velocity": True}, "finite number"),
    (HalfCheetahDirection, {}, "lacks direction"),
    (HalfCheetahDirection, {"direction": 0}, "1 \\(forward\\) or -1"),
    (HalfCheetahDirection, {"direction": "forward"}, "1 \\(forward\\) or -1"),
    (AntDirection, {"direction": 2}, "1 \\(forward\\) or -1"),
])
def test_bad_locomotion_tasks_are_refused(env_class, task, message):
    with pytest.raises(ValueError, match=message):
        env_class().set_task(task)


# --- Meta-World ML1 ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reach() -> MetaWorldML1:
    return MetaWorldML1("reach-v3", split="train", horizon=150)


def test_ml1_tasks_are_the_benchmarks_seeded_and_json(reach):
    tasks = reach.sample_tasks(10, seed=0)
    assert tasks == reach.sample_tasks(10, seed=0) and tasks != reach.sample_tasks(10, seed=1)
    assert json.loads(json.dumps(tasks)) == tasks
    assert len({task["index"] for task in tasks}) == 10
    assert all(task["split"] == "train" and task["task_name"] == "reach-v3" and len(task["rand_vec"]) == 6
               for task in tasks)
    everything = reach.sample_tasks(50, seed=2)
    assert sorted(task["index"] for task in everything) == list(range(50)) == list(range(reach.num_tasks))
    test_split = MetaWorldML1("reach-v3", split="test").sample_tasks(50, seed=2)
    train_goals = {tuple(task["rand_vec"]) for task in everything}
    assert not train_goals & {tuple(task["rand_vec"]) for task in test_split}


def test_ml1_spaces_horizon_and_fixed_start(reach):
    assert reach.observation_space.shape == (39,) and reach.action_space.shape == (4,)
    assert MetaWorldML1("reach-v3").horizon == 500
    reach.set_task(reach.sample_tasks(1, seed=0)[0])
    start, info = reach.reset(seed=0)
    assert info["task"] == reach.get_task()
    assert np.array_equal(start[-3:], np.zeros(3))  # ML1 hides the goal
    assert np.array_equal(start, reach.reset(seed=1)[0])  # Meta-World's start is fixed by the variation
    flags = [reach.step(np.zeros(4))[3] for _ in range(150)]
    assert flags == [False] * 149 + [True]
    with pytest.raises(RuntimeError, match="call reset"):
        reach.step(np.zeros(4))


def test_ml1_success_is_passed_through_and_follows_the_task(reach):
    """A hand driven to the task's goal succeeds; one held still, or driven to another task's goal, does not."""

    def successes(task: dict, goal: np.ndarray) -> list[float]:
        reach.set_task(task)
        observation, _ = reach.reset(seed=0)
        result = []
        for _ in range(60):
            action = np.zeros(4)
            action[:3] = np.clip((goal - observation[:3]) * 20.0, -1.0, 1.0)
            observation, _, _, _, info = reach.step(action)
            result.append(info["success"])
        return result

    first, second = reach.sample_tasks(2, seed=5)
    first_goal = np.array(first["rand_vec"][3:6])  # reach's rand_vec: puck start, then goal
    assert successes(first, first_goal)[-1] == 1.0
    assert successes(second, first_goal)[-1] == 0.0
    assert max(successes(first, np.array(reach.reset(seed=0)[0][:3]))) == 0.0  # held at the start


def test_ml1_test_tasks_can_be_set_on_a_train_environment(reach):
    task = MetaWorldML1("reach-v3", split="test").sample_tasks(1, seed=0)[0]
    reach.set_task(task)
    assert reach.get_task() == task


@pytest.mark.parametrize("change, message", [
    ({"task_name": "push-v3"}, "runs 'reach-v3'"),
    ({"split": "validation"}, "split must be"),
    ({"index": 50}, "index must be an integer in \\[0, 50\\)"),
    ({"index": 1.0}, "index must be an integer"),
    ({"rand_vec": [0.0] * 6}, "another benchmark_seed"),
])
def test_ml1_bad_tasks_are_refused(reach, change, message):
    task = {**reach.sample_tasks(1, seed=0)[0], **change}
    with pytest.raises(ValueError, match=message):
        reach.set_task(task)


def test_ml1_task_without_an_index_is_refused(reach):
    with pytest.raises(ValueError, match="lacks index"):
        reach.set_task({"task_name": "reach-v3", "split": "train"})


def test_ml1_bad_construction_is_refused():
    with pytest.raises(ValueError, match="unknown task_name 'reach-v2'.*reach-v3"):
        MetaWorldML1("reach-v2")
    with pytest.raises(ValueError, match="split must be"):
        MetaWorldML1(split="val")


def test_ml1_without_metaworld_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "metaworld", None)  # makes `import metaworld` fail
    with pytest.raises(ImportError, match=r"pip install 'innerloop\[metaworld\]'"):
        MetaWorldML1()
