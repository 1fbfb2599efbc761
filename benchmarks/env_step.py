"""Env step rate against the physical limit: a bare loop of 40 `mj_step` calls on the same model.

    python benchmarks/env_step.py [--steps 3000] [--rounds 5]

The bare loops replay the very pushes the env made (the state and control recorded before each push), so both
simulate the same contacts; restoring a state costs the bare loop a few microseconds. Rounds interleave the
variants so that noise from other processes hits them alike; medians are printed.
Target: the env adds <= 15 % over the bare physics (ratio <= 1.15).
"""

from __future__ import annotations

import argparse
import statistics
import time

import mujoco
import numpy as np

from kalm.env import CLEVRRobotEnv
from kalm.env.clevr import PUSH_FORCE, PUSH_OFFSET, SUBSTEPS
from kalm.tasks.world import PUSH_DIRECTIONS


def record_pushes(env: CLEVRRobotEnv, actions: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """The (qpos, qvel, ctrl) at the start of each push's substeps, from one env run."""
    snapshots = []
    env.reset(seed=0)
    for i, action in enumerate(actions):
        d = env.data
        ball, k = divmod(int(action), 8)
        qpos, qvel = d.qpos.copy(), d.qvel.copy()
        qpos[-2:] = qpos[7 * ball : 7 * ball + 2] - PUSH_OFFSET * PUSH_DIRECTIONS[k]
        qvel[-2:] = 0.0
        snapshots.append((qpos, qvel, PUSH_FORCE * PUSH_DIRECTIONS[k]))
        env.step(int(action))
        if (i + 1) % 50 == 0:
            env.reset()
    return snapshots


def time_env(env: CLEVRRobotEnv, actions: np.ndarray) -> float:
    env.reset(seed=0)
    start = time.perf_counter()
    for i, action in enumerate(actions):
        env.step(int(action))
        if (i + 1) % 50 == 0:  # as in record_pushes; resets are part of the env's cost
            env.reset()
    return (time.perf_counter() - start) / len(actions)


def time_bare(model: mujoco.MjModel, data: mujoco.MjData, snapshots: list, nstep: bool) -> float:
    start = time.perf_counter()
    for qpos, qvel, ctrl in snapshots:
        data.qpos[:], data.qvel[:], data.ctrl[:] = qpos, qvel, ctrl
        if nstep:
            mujoco.mj_step(model, data, nstep=SUBSTEPS)
        else:
            for _ in range(SUBSTEPS):
                mujoco.mj_step(model, data)
    return (time.perf_counter() - start) / len(snapshots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    env = CLEVRRobotEnv()
    actions = np.random.default_rng(0).integers(0, 40, args.steps)
    snapshots = record_pushes(env, actions)
    data = mujoco.MjData(env.model)
    results: dict[str, list[float]] = {"env.step": [], "bare 40x mj_step": [], "bare mj_step(nstep=40)": []}
    for _ in range(args.rounds):
        results["env.step"].append(time_env(env, actions))
        results["bare 40x mj_step"].append(time_bare(env.model, data, snapshots, nstep=False))
        results["bare mj_step(nstep=40)"].append(time_bare(env.model, data, snapshots, nstep=True))
    medians = {name: statistics.median(v) for name, v in results.items()}
    base = medians["bare 40x mj_step"]
    print(f"{'variant':<26}{'ms/step':>9}{'steps/s':>10}{'ratio':>8}")
    for name, seconds in medians.items():
        print(f"{name:<26}{seconds * 1e3:>9.3f}{1 / seconds:>10.0f}{seconds / base:>8.3f}")
    print(f"env overhead over the bare 40-step loop: {100 * (medians['env.step'] / base - 1):+.1f} %")
    nstep = medians["bare mj_step(nstep=40)"]
    print(f"env overhead over one mj_step(nstep=40) call: {100 * (medians['env.step'] / nstep - 1):+.1f} %")


if __name__ == "__main__":
    main()
