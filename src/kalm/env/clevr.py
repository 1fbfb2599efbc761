"""CLEVR-Robot (KALM variant) on the `mujoco` bindings as a gymnasium environment."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from kalm.env.scene import BALL_Z, CAMERA, N_BALLS, sample_positions, scene_xml
from kalm.tasks.goals import Goal, parse_goal
from kalm.tasks.world import N_ACTIONS, PUSH_DIRECTIONS, PUSH_OFFSET

PUSH_FORCE = 1.0
SUBSTEPS = 40  # 2 * frame_skip of the original
MAX_EPISODE_STEPS = 50
_BALL_QPOS = np.array([7 * i + k for i in range(N_BALLS) for k in (0, 1)])


class CLEVRRobotEnv(gym.Env):
    """Five balls on a table, pushed by a point mass with KALM's 40 "perfect" push actions.

    Action ``a`` pushes ball ``a // 8`` along ``PUSH_DIRECTIONS[a % 8]``; the observation is the (x, y) of the
    balls in colour order (float32[10]). ``reset(options={"positions": (5, 2) array, "goal": spec})`` places the
    balls and sets the goal; without a goal, reward is 0 and episodes end only by truncation.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(
        self,
        render_mode: str | None = None,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        width: int = 300,
        height: int = 300,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: {render_mode!r} is not one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.width, self.height = width, height
        self.model = mujoco.MjModel.from_xml_string(scene_xml(width, height))
        self.data = mujoco.MjData(self.model)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        # The declared direct-obs bounds of the original env, widened to cover balls thrown against the walls.
        low = np.tile(np.array([-0.6, -0.4], dtype=np.float32), N_BALLS)
        high = np.tile(np.array([0.6, 0.8], dtype=np.float32), N_BALLS)
        self.observation_space = gym.spaces.Box(low=low, high=high, dtype=np.float32)
        self.goal: Goal | None = None
        self._steps = 0
        self._obs = np.zeros(2 * N_BALLS, dtype=np.float32)
        self._renderer: mujoco.Renderer | None = None
        self._camera: mujoco.MjvCamera | None = None

    def _observe(self) -> np.ndarray:
        return self.data.qpos[_BALL_QPOS].astype(np.float32)

    def _place(self, positions: np.ndarray) -> None:
        mujoco.mj_resetData(self.model, self.data)
        qpos = self.data.qpos
        for i, (x, y) in enumerate(positions):
            qpos[7 * i : 7 * i + 7] = (x, y, BALL_Z, 1.0, 0.0, 0.0, 0.0)
        mujoco.mj_forward(self.model, self.data)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "positions" in options:
            positions = np.asarray(options["positions"], dtype=np.float64)
            if positions.shape != (N_BALLS, 2):
                raise ValueError(f"options['positions']: expected shape (5, 2), got {positions.shape}")
        else:
            positions = sample_positions(self.np_random)
        self.goal = parse_goal(options["goal"]) if options.get("goal") is not None else None
        self._place(positions)
        self._steps = 0
        self._obs = self._observe()
        return self._obs.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = int(action)
        if not 0 <= action < N_ACTIONS:
            raise ValueError(f"action: {action} is outside 0..{N_ACTIONS - 1}")
        prev_obs = self._obs
        self.push(action)
        self._steps += 1
        obs = self._observe()
        self._obs = obs
        reward, success = 0.0, False
        if self.goal is not None:
            success = self.goal.is_success(prev_obs, action, obs)
            reward = self.goal.reward(prev_obs, action, obs)
        terminated = success or (self.goal is not None and self.goal.ends_after_one_step)
        truncated = not terminated and self._steps >= self.max_episode_steps
        return obs.copy(), float(reward), terminated, truncated, {"is_success": success}

    def push(self, action: int) -> None:
        """Execute one perfect push: teleport the pusher behind the ball, then push for 40 substeps.

        Ball velocities carry over from the previous push, as in the original; only the pusher's is zeroed.
        """
        ball, k = divmod(action, 8)
        direction = PUSH_DIRECTIONS[k]
        m, d = self.model, self.data
        d.qpos[-2:] = d.qpos[7 * ball : 7 * ball + 2] - PUSH_OFFSET * direction
        d.qvel[-2:] = 0.0
        # dm_control's set_state runs mj_forward here, and its legacy step ends with one too. mj_step recomputes
        # everything from qpos / qvel, so both are skipped (states stay bit-identical, checked in the tests);
        # render() runs the forward pass it needs.
        d.ctrl[:] = PUSH_FORCE * direction
        mujoco.mj_step(m, d, nstep=SUBSTEPS)

    def render(self) -> np.ndarray | None:
        """An RGB image (uint8, height x width x 3) from the original env's default camera."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            cam = mujoco.MjvCamera()
            cam.type = mujoco.mjtCamera.mjCAMERA_FREE
            cam.azimuth, cam.elevation = CAMERA["azimuth"], CAMERA["elevation"]
            cam.distance, cam.lookat[:] = CAMERA["distance"], CAMERA["lookat"]
            self._camera = cam
        mujoco.mj_forward(self.model, self.data)
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
