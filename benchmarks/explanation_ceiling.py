"""How learnable is an episode's goal from its states? A plain MLP's held-out accuracy at explaining a rollout.

    python benchmarks/explanation_ceiling.py --episodes 720 --episodes 0

The `ground` stage's `explanation_accuracy` asks the LLM to name the goal a successful rollout reached. This script
fits a plain MLP (2 x 256, ReLU, Adam 1e-3, batch 256, a fixed number of steps) on the same train / held-out split
of data/offline (`split_episodes`, the stage's seed), successful episodes only, from the normalised first, last but
one and last states to the goal's source ball, reference ball and direction (three heads), with the state features
of `kalm.llm.numeric.slot_features`:

- ``linear``: the coordinates only (what the LLM's state slot reads by default);
- ``pairs``: + every pair of balls' offset and distance (``ground.state_features: pairs``);
- ``relations``: + whether each goal relation holds, by the goals' own test (``ground.state_features: relations``).

Printed first: how well posed the question is — among the goal relations of the last pushed ball that turn true at
the last step, how often a uniform pick is the episode's goal, and how often it is the only one. Then per training
size and features: held-out accuracy of the source, the reference, the direction and the whole goal. What the MLP
cannot read on the same episodes the LLM should not be expected to read either.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from kalm import paths
from kalm.config import load_params
from kalm.data import read_episodes
from kalm.llm.numeric import normalise, slot_features
from kalm.stages.ground import split_episodes
from kalm.tasks.goals import parse_goal, relation_holds
from kalm.tasks.world import COLOURS, DIRECTIONS

HEADS = {"source": len(COLOURS), "reference": len(COLOURS), "direction": len(DIRECTIONS)}


def relation_episodes(episodes):
    """(episode, goal) of the successful episodes whose goal is a relation (source, reference, direction)."""
    for e in episodes:
        goal = parse_goal(json.loads(e.goal)) if e.success else None
        if hasattr(goal, "direction"):
            yield e, goal


def dataset(episodes, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F) features of s_0, s_T-1, s_T and (N, 3) goal ids (source, reference, direction) of successful episodes."""
    rows, goals = [], []
    for e, goal in relation_episodes(episodes):
        states = torch.from_numpy(normalise(e.observations[[0, -2, -1]]))
        rows.append(slot_features(states, kind).flatten())
        goals.append([COLOURS.index(goal.src), COLOURS.index(goal.dst), DIRECTIONS.index(goal.direction)])
    return torch.stack(rows), torch.tensor(goals)


def rule_ceiling(episodes) -> tuple[float, float, int]:
    """(expected accuracy of a uniform pick among the relations of the last pushed ball that turn true at the last
    step, share of episodes where that relation is the only one, episodes) over successful relation episodes."""
    expected, unique, n = 0.0, 0, 0
    for e, goal in relation_episodes(episodes):
        prev, last, src = e.observations[-2], e.observations[-1], COLOURS[int(e.actions[-1]) // 8]
        turned = [(src, dst, d) for dst in COLOURS if dst != src for d in DIRECTIONS
                  if relation_holds(last, src, dst, d) and not relation_holds(prev, src, dst, d)]  # fmt: skip
        hit = (goal.src, goal.dst, goal.direction) in turned
        expected += hit / max(len(turned), 1)
        unique += hit and len(turned) == 1
        n += 1
    return expected / n, unique / n, n


def fit(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, sum(HEADS.values())))  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(x), (min(256, len(x)),), generator=gen)
        logits = net(x[idx]).split(list(HEADS.values()), dim=-1)
        loss = sum(nn.functional.cross_entropy(lg, y[idx, k]) for k, lg in enumerate(logits))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def accuracies(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        predicted = torch.stack([lg.argmax(-1) for lg in net(x).split(list(HEADS.values()), dim=-1)], dim=-1)
    right = predicted == y
    return {**{name: float(right[:, k].float().mean()) for k, name in enumerate(HEADS)},
            "goal": float(right.all(-1).float().mean())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--episodes", type=int, action="append", help="training episodes (0 = all); repeatable")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--offline", default=str(paths.OFFLINE_EPISODES))
    args = parser.parse_args()
    params = load_params(args.params)
    train, held = split_episodes(read_episodes(args.offline, made_by="collect"), params.ground.heldout_fraction,
                                 params.seed)  # fmt: skip
    expected, unique, n = rule_ceiling(held)
    print(f"{n} held-out successful relation episodes: a uniform pick among the last pushed ball's relations that turn")
    print(f"true at the last step is the goal {expected:.3f} of the time; the only one in {unique:.3f}\n")
    print("| features | train episodes | successful | source | reference | direction | whole goal |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    kinds = ("linear", "pairs", "relations")
    held_out = {kind: dataset(held, kind) for kind in kinds}  # the same for every training size
    for n in args.episodes or [params.ground.episodes]:
        for kind in kinds:
            x, y = dataset(train[:n] if n else train, kind)
            acc = accuracies(fit(x, y, args.steps, params.seed), *held_out[kind])
            cells = " | ".join(f"{acc[k]:.3f}" for k in (*HEADS, "goal"))
            print(f"| {kind} | {n or len(train)} | {len(x)} | {cells} |", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)  # the README's table was measured on one thread (fp32 sums depend on the split)
    main()
