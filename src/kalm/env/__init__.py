"""CLEVR-Robot on `mujoco` + gymnasium, registered as ``kalm/CLEVRRobot-v0``."""

import gymnasium as gym

from kalm.env.clevr import MAX_EPISODE_STEPS, CLEVRRobotEnv

ENV_ID = "kalm/CLEVRRobot-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="kalm.env.clevr:CLEVRRobotEnv")

__all__ = ["CLEVRRobotEnv", "ENV_ID", "MAX_EPISODE_STEPS"]
