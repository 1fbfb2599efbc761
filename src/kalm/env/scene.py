"""The CLEVR-Robot scene (MJCF) and its reset sampling, with the numbers of `reference/clevr-robot.md` §1-4."""

from __future__ import annotations

import numpy as np

from kalm.tasks.world import BALL_RADIUS, COLOURS

N_BALLS = len(COLOURS)
BALL_Z = -0.325 + BALL_RADIUS  # centre height of a ball resting on the table plane (before the contact margin)
PUSHER_Z = -0.2
RGBA = {
    "red": "1 .1 .1 1",
    "blue": ".2 .5 1 1",
    "green": ".2 1 0 1",
    "purple": ".8 .2 1 1",
    "cyan": ".2 1 1 1",
}
# Reset sampling (original generate_scene.add_random_objects).
SAMPLE_LOW = np.array([-0.5, -0.3])
SAMPLE_HIGH = np.array([0.5, 0.5])
MIN_CENTRE_DIST = 2 * BALL_RADIUS + 0.1  # surface gap >= min_dist 0.1
MIN_AXIS_MARGIN = 0.01
TRIES_PER_BALL = 10
# Default free-camera pose of the original env (§8): it sits on the -y side, looking toward +y and down.
CAMERA = {"azimuth": 90.0, "elevation": -45.0, "distance": 2.374, "lookat": (-0.121, 0.219, -0.235)}


def _ball(i: int, colour: str) -> str:
    return f"""
    <body name="obj{i}" pos="0 {0.4 * i} {BALL_Z}">
      <joint name="obj{i}_slide" type="free" damping="0.75" limited="false"/>
      <geom name="obj{i}" type="sphere" size="{BALL_RADIUS}" rgba="{RGBA[colour]}" material="rubber"
            contype="1" conaffinity="1" density="1"/>
    </body>"""


def scene_xml(render_width: int = 300, render_height: int = 300) -> str:
    """The MJCF of the 5-ball scene with the point-mass pusher, the table and the four one-sided walls."""
    balls = "".join(_ball(i, c) for i, c in enumerate(COLOURS))
    return f"""<mujoco model="clevr_robot">
  <compiler inertiafromgeom="true" angle="radian"/>
  <option timestep="0.01" gravity="0 0 -9.81" iterations="20" integrator="Euler"/>
  <visual><global offwidth="{max(render_width, 640)}" offheight="{max(render_height, 480)}"/></visual>
  <default>
    <joint armature="0.04" damping="1" limited="true"/>
    <geom friction=".8 .1 .1" density="300" margin="0.002" condim="3" contype="0" conaffinity="0"/>
  </default>
  <asset>
    <material name="rubber" specular="0" shininess=".1" reflectance="0"/>
  </asset>
  <worldbody>
    <light diffuse=".5 .5 .5" pos="0 0 3" dir="0 0 -1"/>
    <geom name="table" type="plane" pos="0 0.5 -0.325" size="1 1 0.1" rgba=".6 .6 .6 1"
          contype="1" conaffinity="1"/>
    <geom name="left_plane" type="plane" pos="-0.6 0 0" euler="0 1.57 0" size="2 2 0.1"
          rgba="1 1 1 0" contype="1" conaffinity="0"/>
    <geom name="right_plane" type="plane" pos="0.6 0 0" euler="0 -1.57 0" size="2 2 0.1"
          rgba="1 1 1 0" contype="1" conaffinity="0"/>
    <geom name="front_plane" type="plane" pos="0 0.7 0" euler="1.57 0 0" size="2 2 0.1"
          rgba="1 1 1 0" contype="1" conaffinity="0"/>
    <geom name="behind_plane" type="plane" pos="0 -0.3 0" euler="-1.57 0 0" size="2 2 0.1"
          rgba="1 1 1 0" contype="1" conaffinity="0"/>{balls}
    <body name="point_mass" pos="0 0 {PUSHER_Z}">
      <joint name="pm_joint_x" type="slide" axis="1 0 0" damping="0.5" range="-10.3 10.3"/>
      <joint name="pm_joint_y" type="slide" axis="0 1 0" damping="0.5" range="-10.3 10.3"/>
      <geom name="pm" type="sphere" size="0.05" rgba="1 1 1 1" density="0.5" contype="1" conaffinity="0"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="pm_joint_x" gear="1" ctrllimited="true" ctrlrange="-2 2"/>
    <motor joint="pm_joint_y" gear="1" ctrllimited="true" ctrlrange="-2 2"/>
  </actuator>
</mujoco>
"""


def _placement_ok(candidate: np.ndarray, placed: list[np.ndarray]) -> bool:
    for other in placed:
        d = candidate - other
        if np.hypot(d[0], d[1]) < MIN_CENTRE_DIST:
            return False
        # The original rejects a projection strictly inside (0, 0.01) along any of the 4 cardinal directions.
        if 0.0 < abs(d[0]) < MIN_AXIS_MARGIN or 0.0 < abs(d[1]) < MIN_AXIS_MARGIN:
            return False
    return True


def sample_positions(rng: np.random.Generator) -> np.ndarray:
    """Sample a scene as the original does: 10 tries per ball, restart the whole scene if one fails.

    Returns a (5, 2) array of ball centres in colour order. The sampling area overlaps the walls on purpose
    (as in the original): such balls are pushed out by the physics during the first action.
    """
    while True:
        placed: list[np.ndarray] = []
        for _ in range(N_BALLS):
            for _ in range(TRIES_PER_BALL):
                candidate = rng.uniform(SAMPLE_LOW, SAMPLE_HIGH)
                if _placement_ok(candidate, placed):
                    placed.append(candidate)
                    break
            else:
                break
        if len(placed) == N_BALLS:
            return np.stack(placed)
