"""CLEVR-Robot on `mujoco` + gymnasium, registered as ``kalm/CLEVRRobot-v0``."""

import os

# Headless rendering by default; MUJOCO_GL is read when mujoco is first imported. Use MUJOCO_GL=osmesa
# (Debian: libosmesa6) where EGL is missing.
if not os.environ.get("MUJOCO_GL") and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"

import gymnasium as gym  # noqa: E402

from kalm.env.clevr import MAX_EPISODE_STEPS, CLEVRRobotEnv  # noqa: E402

ENV_ID = "kalm/CLEVRRobot-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="kalm.env.clevr:CLEVRRobotEnv")

__all__ = ["CLEVRRobotEnv", "ENV_ID", "MAX_EPISODE_STEPS"]
