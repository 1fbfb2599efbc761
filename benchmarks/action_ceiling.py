"""How learnable is the offline data's action from the state and the goal? A plain MLP's held-out accuracy.

    python benchmarks/action_ceiling.py --episodes 720 --episodes 5000 --episodes 0

The `ground` stage's metric `action_accuracy` asks the LLM for the recorded action of held-out transitions. This
script fits a plain MLP (2 x 256, ReLU, Adam 1e-3, batch 256, a fixed number of steps) on the same train / held-out
split of data/offline (`split_episodes`, the stage's seed), given the goal as ideal one-hots instead of text:

- ``onehot``: normalised coordinates (10) + source, reference colour and direction one-hots (14);
- ``relative``: + the source ball's, the reference ball's and the reward target's coordinates picked out, and the
  way from the source ball to the target (8 more): the geometry the legible policy computes, handed over.

Printed per training size: held-out accuracy on every transition (the recorded action, ε steps included) and on
the pushed ball only; first, which of the legible policy's rules decided the held-out steps. A target the MLP cannot
reach on the same episodes is not a fair target for the LLM either.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from torch import nn

from kalm import paths
from kalm.config import load_params
from kalm.data import read_episodes
from kalm.llm.numeric import normalise
from kalm.seeds import seed_stream
from kalm.stages.ground import split_episodes
from kalm.tasks.behaviour import first_in_the_way, on_workbench, reward_target
from kalm.tasks.goals import parse_goal
from kalm.tasks.world import COLOURS, DIRECTIONS


def features(episodes, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) inputs and (N,) recorded actions of every transition of ``episodes``."""
    rows, actions = [], []
    for e in episodes:
        goal = parse_goal(json.loads(e.goal))
        src, dst = COLOURS.index(goal.src), COLOURS.index(goal.dst)
        onehot = np.zeros(14, dtype=np.float32)
        onehot[src], onehot[5 + dst], onehot[10 + DIRECTIONS.index(goal.direction)] = 1.0, 1.0, 1.0
        for obs, action in zip(e.observations[:-1], e.actions, strict=True):
            x = [normalise(obs), onehot]
            if kind == "relative":
                balls = obs.reshape(5, 2)
                target = reward_target(balls, goal)
                x.append(np.concatenate([balls[src], balls[dst], target, target - balls[src]]).astype(np.float32))
            rows.append(np.concatenate(x))
            actions.append(int(action))
    return np.stack(rows), np.asarray(actions)


def rule_shares(episodes) -> dict[str, float]:
    """Which of the legible policy's rules decides each step: target off the table, a ball in the way, or neither."""
    counts = {"off the table": 0, "ball in the way": 0, "straight": 0}
    for e in episodes:
        goal = parse_goal(json.loads(e.goal))
        src = COLOURS.index(goal.src)
        for obs in e.observations[:-1]:
            balls = obs.reshape(5, 2).astype(np.float64)
            aim = reward_target(balls, goal)
            if not on_workbench(aim):
                counts["off the table"] += 1
            elif first_in_the_way(balls, src, aim) is not None:
                counts["ball in the way"] += 1
            else:
                counts["straight"] += 1
    total = max(1, sum(counts.values()))
    return {k: round(v / total, 3) for k, v in counts.items()}


def fit_and_score(train, held: tuple[np.ndarray, np.ndarray], kind: str, steps: int, seed: int) -> tuple[float, float]:
    """Held-out (action, pushed-ball) accuracy of an MLP fitted on ``train``; ``held``: its features and actions."""
    x, y = (torch.from_numpy(a) for a in features(train, kind))
    hx, hy = (torch.from_numpy(a) for a in held)
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 40))
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), 256))
        loss = nn.functional.cross_entropy(mlp(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = mlp(hx).argmax(-1)
    return float((pred == hy).float().mean()), float((pred // 8 == hy // 8).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, action="append", help="training episodes (0 = the whole split)")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params()
    episodes = read_episodes(paths.OFFLINE_EPISODES, made_by="collect")
    train_eps, held = split_episodes(episodes, params.ground.heldout_fraction, params.seed)
    print("legible policy's deciding rule, held-out steps:", rule_shares(held))
    seed = int(seed_stream(params.seed, "benchmarks.action_ceiling").integers(2**31))
    held_features = {kind: features(held, kind) for kind in ("onehot", "relative")}
    print("| features | train episodes | transitions | MLP steps | held-out action acc. | pushed ball |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in args.episodes or [720, 0]:
        subset = train_eps[:n] if n else train_eps
        for kind in ("onehot", "relative"):
            acc, ball = fit_and_score(subset, held_features[kind], kind, args.steps, seed)
            n_tr = sum(e.length for e in subset)
            print(f"| {kind} | {len(subset)} | {n_tr} | {args.steps} | {acc:.3f} | {ball:.3f} |", flush=True)


if __name__ == "__main__":
    main()
