"""The CLEVR-Robot environment against the validation targets of reference/clevr-robot.md §15."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from kalm.env import ENV_ID, CLEVRRobotEnv
from kalm.env.scene import MIN_CENTRE_DIST, sample_positions
from tests.conftest import DATA

SAMPLE = json.loads((DATA / "kalm_sample_transitions.json").read_text())
# One ball in the middle, the others in the far corners: pushes along an axis touch nothing.
ISOLATED = np.array([[0.0, 0.2], [-0.45, 0.55], [0.45, 0.55], [-0.45, -0.15], [0.45, -0.15]])


@pytest.fixture
def env() -> CLEVRRobotEnv:
    env = CLEVRRobotEnv()
    yield env
    env.close()


def test_model_matches_the_scene_numbers(env: CLEVRRobotEnv) -> None:
    m = env.model
    assert (m.nq, m.nv, m.nu) == (37, 32, 2)
    assert m.opt.timestep == 0.01 and m.opt.iterations == 20
    assert m.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    ball = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "obj0")
    assert m.body_mass[ball] == pytest.approx(0.009203, abs=1e-6)
    assert m.geom_size[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "obj0")][0] == 0.13
    assert m.dof_damping[0] == 0.75 and m.dof_armature[0] == 0.04
    assert list(m.actuator_ctrlrange[0]) == [-2.0, 2.0]


@pytest.mark.parametrize("push", [0, 1, 2, 3])
def test_isolated_axis_push_moves_0247(env: CLEVRRobotEnv, push: int) -> None:
    env.reset(options={"positions": ISOLATED})
    obs, *_ = env.step(push)  # ball 0 (red), axis direction `push`
    moved = np.linalg.norm(obs[:2] - ISOLATED[0])
    assert moved == pytest.approx(0.247, abs=0.003)
    assert np.linalg.norm(env.data.qvel[0:2]) == pytest.approx(0.76, abs=0.02)
    np.testing.assert_array_equal(obs[2:], ISOLATED[1:].ravel().astype(np.float32))


def test_ball_velocity_carries_over_to_the_next_push(env: CLEVRRobotEnv) -> None:
    env.reset(options={"positions": ISOLATED})
    obs1, *_ = env.step(0)  # red along +x, still rolling at ~0.76 m/s
    obs2, *_ = env.step(8 + 3)  # push blue; red coasts meanwhile
    assert obs2[0] - obs1[0] > 0.03


def test_balls_rest_at_z_0191(env: CLEVRRobotEnv) -> None:
    env.reset(options={"positions": ISOLATED})
    mujoco.mj_step(env.model, env.data, nstep=100)
    np.testing.assert_allclose(env.data.qpos[2:35:7], -0.191, atol=5e-4)


def test_pushing_into_a_wall_stops_at_the_wall(env: CLEVRRobotEnv) -> None:
    start = ISOLATED.copy()
    start[0] = (0.0, 0.2)
    env.reset(options={"positions": start})
    xs = [env.step(0)[0][0] for _ in range(3)]  # red along +x towards the right wall at x = 0.47
    assert xs[0] == pytest.approx(0.247, abs=0.003)
    assert xs[1] == pytest.approx(0.467, abs=0.005)
    assert xs[2] == pytest.approx(0.466, abs=0.005)


def test_first_pushes_of_the_reference_sample_reproduce_within_1cm(env: CLEVRRobotEnv) -> None:
    clear = [t for t in SAMPLE["first_transitions"] if not t["starts_inside_wall"]]
    assert len(clear) == 7
    errors = []
    for t in clear:
        env.reset(options={"positions": np.reshape(t["obs"], (5, 2))})
        obs, *_ = env.step(t["action"])
        errors.append(np.linalg.norm((obs - np.array(t["next_obs"])).reshape(5, 2), axis=1).max())
    assert max(errors) < 0.01, errors
    assert np.median(errors) < 0.005, errors


def test_same_actions_give_bit_identical_states(env: CLEVRRobotEnv) -> None:
    actions = [3, 17, 22, 38, 9, 0, 31]
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=5)
        trace = [obs] + [env.step(a)[0] for a in actions]
        runs.append((np.stack(trace), env.data.qpos.copy(), env.data.qvel.copy()))
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_scene_and_sampling_rules(env: CLEVRRobotEnv) -> None:
    a, _ = env.reset(seed=11)
    b, _ = env.reset(seed=11)
    c, _ = env.reset(seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rng = np.random.default_rng(0)
    min_dist = []
    for _ in range(300):
        p = sample_positions(rng)
        assert np.all((p[:, 0] >= -0.5) & (p[:, 0] <= 0.5) & (p[:, 1] >= -0.3) & (p[:, 1] <= 0.5))
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)[np.triu_indices(5, 1)]
        min_dist.append(d.min())
        gaps = np.abs(p[:, None] - p[None])[np.triu_indices(5, 1)]
        assert not np.any((gaps > 0) & (gaps < 0.01))
    assert min(min_dist) >= MIN_CENTRE_DIST
    assert np.median(min_dist) == pytest.approx(0.378, abs=0.02)


def test_goal_reward_success_and_termination(env: CLEVRRobotEnv) -> None:
    goal = {"type": "relation", "src": "red", "dst": "blue", "direction": "behind"}
    start = ISOLATED.copy()
    start[0], start[1] = (0.3, 0.45), (0.0, 0.0)
    obs0, _ = env.reset(options={"positions": start, "goal": goal})
    obs1, reward, terminated, truncated, info = env.step(2)  # red along -x: closer, not yet there
    assert not terminated and not truncated and not info["is_success"]
    assert reward == pytest.approx(env.goal.reward(obs0, 2, obs1)) and reward > 1.0
    obs2, reward, terminated, truncated, info = env.step(3)  # red along -y: now behind blue, close
    assert terminated and not truncated and info["is_success"] and reward == 100.0


def test_move_goal_ends_after_one_step(env: CLEVRRobotEnv) -> None:
    env.reset(options={"positions": ISOLATED, "goal": {"type": "move", "ball": "red", "direction": "left"}})
    _, reward, terminated, _, info = env.step(2)
    assert terminated and info["is_success"] and reward == 1.0
    env.reset(options={"positions": ISOLATED, "goal": {"type": "move", "ball": "red", "direction": "left"}})
    _, reward, terminated, _, info = env.step(0)
    assert terminated and not info["is_success"] and reward == 0.0


def test_truncates_after_max_episode_steps() -> None:
    env = CLEVRRobotEnv(max_episode_steps=3)
    env.reset(seed=0, options={"goal": {"type": "gather", "center": "green"}})
    flags = [env.step(1)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_bad_reset_options_and_actions_raise(env: CLEVRRobotEnv) -> None:
    with pytest.raises(ValueError, match="positions"):
        env.reset(options={"positions": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="direction"):
        env.reset(options={"goal": {"type": "move", "ball": "red", "direction": "up"}})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(40)


def test_gymnasium_registration_and_env_checker() -> None:
    env = gym.make(ENV_ID)
    assert isinstance(env.unwrapped, CLEVRRobotEnv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_render_orientation_matches_the_original_camera() -> None:
    env = CLEVRRobotEnv(render_mode="rgb_array")
    positions = np.array([[0.0, 0.45], [-0.3, -0.15], [0.35, -0.15], [-0.45, 0.3], [0.45, 0.3]])
    env.reset(options={"positions": positions})
    img = env.render()
    env.close()
    assert img.shape == (300, 300, 3) and img.dtype == np.uint8
    red_rows, red_cols = np.nonzero((img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60))
    blue_rows, blue_cols = np.nonzero((img[..., 2] > 200) & (img[..., 0] < 90) & (img[..., 1] < 160))
    assert red_rows.mean() == pytest.approx(117, abs=6)  # y = 0.45 is far: high in the image
    assert blue_rows.mean() == pytest.approx(179, abs=6)  # y = -0.15 is near: low in the image
    assert blue_cols.mean() < red_cols.mean()  # -x is on the left
