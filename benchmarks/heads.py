"""Which fitted heads make the grounded LLM a good policy and world model? One run, equal steps, the `ground` stage's
own code on its own outputs.

The SFT's model (models/grounded, its own linear heads; any fitted heads it carries are set aside) is run once,
forward only, over the largest episode count asked for; each configuration then fits its heads with `ground`'s code
(``kalm.llm.heads.fit``, ``ground.head_steps`` / ``ground.world_steps``) and is measured where the user meets it:

- ``policy``: the LLM as a policy, closed loop in the real env, on the stage's held-out episodes
  (``ground.policy_episodes``: metrics/ground.json ``policy_success``);
- ``dyn/copy``: the state head's held-out error over the copy baseline's (metrics/ground.json ``dynamics_mse``);
- imagined rephrase and easy rollouts on `imagine`'s own tasks and starts (``--rollouts`` of each): ``match`` (the
  goal's test on the generated states), ``implausible`` (share of generated states no real scene could have),
  ``off bench`` (share of transitions with a ball beyond a wall: metrics/imagine.json), ``replay`` (the actions
  reach the goal in the real env) and ``match+replay``.

    python benchmarks/heads.py [--params params.yaml] [--episodes 720 --episodes 1440] [--rollouts 128]

Needs `dvc repro ground` (models/grounded, data/offline). Writes nothing; logs nothing to MLflow. One torch thread
per process unless ``--threads``.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from kalm import paths
from kalm.config import load_params
from kalm.env import CLEVRRobotEnv
from kalm.llm import diagnostics as diag
from kalm.llm import heads as fitted
from kalm.llm.device import resolve_bf16
from kalm.llm.generate import generate_rollouts
from kalm.llm.model import load_grounded, sample_builder
from kalm.llm.policy import LLMPolicy
from kalm.seeds import seed_stream
from kalm.stages import ground, imagine
from kalm.tasks import parse_goal
from kalm.tasks.world import is_plausible


def imagined(lm, builder, pad_id, params, level: str, n: int, env) -> dict[str, float]:
    """`imagine`'s rollouts of one level (its tasks, starts and stopping rule) with ``lm``'s current heads."""
    tasks = imagine.imagination_tasks(params, level, n)
    goals = [parse_goal(spec) for _, spec in tasks]
    starts, _ = imagine.initial_states(env, goals, params.seed, level)
    limits = [1 if g.ends_after_one_step else params.env.max_episode_steps for g in goals]
    rollouts = []
    batch = params.imagine.batch_size
    order = sorted(range(n), key=lambda i: tasks[i][0])
    for lo in range(0, n, batch):
        rows = order[lo : lo + batch]
        out = generate_rollouts(
            lm, builder, pad_id, [tasks[i][0] for i in rows], starts[rows], [limits[i] for i in rows],
            is_success=lambda r, prev, a, nxt, rows=rows: goals[rows[r]].is_success(prev, a, nxt),
        )  # fmt: skip
        rollouts += [(rows[j], *o) for j, o in enumerate(out)]
    match = np.array([ok for *_, ok in rollouts])
    replay = np.array([imagine.replay_succeeds(env, goals[i], s[0], a) for i, s, a, _ in rollouts])
    states = [s[1:] for _, s, _, _ in rollouts]
    return {
        "match": match.mean(),
        "implausible": np.mean([not is_plausible(x) for s in states for x in s]),
        "off bench": np.mean(np.concatenate([imagine.out_of_workbench(s) for _, s, _, _ in rollouts])),
        "replay": replay.mean(),
        "match+replay": (match & replay).mean(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--episodes", type=int, action="append", help="action-head episode counts (default: 720)")
    parser.add_argument("--head-steps", type=int, action="append", help="action-head Adam steps (default: params)")
    parser.add_argument("--rollouts", type=int, default=128, help="imagined rollouts per level")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    counts = sorted(args.episodes or [720])
    head_steps = args.head_steps or [params.ground.head_steps]
    cfg = params.ground
    bf16 = resolve_bf16(cfg.precision, "cpu")
    lm, tokenizer, _ = load_grounded(paths.GROUNDED_MODEL, base_dir=paths.BASE_MODEL,
                                     dtype=torch.bfloat16 if bf16 else torch.float32)  # fmt: skip
    fitted.attach(lm, None)
    builder, pad_id = sample_builder(tokenizer, lm), tokenizer.pad_token_id
    train_all, held = ground.training_split(params)
    rng = seed_stream(params.seed, "ground.heads")
    pool = train_all[cfg.episodes :][: counts[-1]]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    clock = time.monotonic()
    with autocast:
        phrasings = [str(rng.choice(e.instructions)) for e in pool]
        action_all = fitted.transitions_with_hidden(lm, builder, pad_id, pool, phrasings)
        action_held = fitted.transitions_with_hidden(lm, builder, pad_id, held[:64], [e.instruction for e in held[:64]])
    seconds = time.monotonic() - clock
    print(f"forward pass: {len(pool)} episodes, {len(action_all)} transitions in {seconds:.0f} s "
          f"({len(pool) / seconds:.2f} episodes/s, {args.threads} thread(s))", flush=True)  # fmt: skip
    ends = np.cumsum([e.length for e in pool])
    world_all = fitted.episode_transitions([e.observations for e in train_all], [e.actions for e in train_all])
    sft_ends = np.cumsum([e.length for e in train_all[: cfg.episodes]])
    picks = seed_stream(params.seed, "ground.diagnostics")
    transitions = diag.held_out_transitions(held, 4 * cfg.diagnostic_episodes, picks)
    env = CLEVRRobotEnv(max_episode_steps=params.env.max_episode_steps)

    worlds: dict[str, torch.nn.Module] = {}

    def heads_for(n_action: int, steps: int, world: str, units) -> fitted.FittedHeads:
        """Fitted with `ground`'s code and seed streams (the draws differ from the stage's where the episode count
        does); a world model is fitted once per data set and shared by the rows that use it."""
        torch.manual_seed(params.seed)
        heads = fitted.FittedHeads(lm.config.hidden_size, units)
        seeds = seed_stream(params.seed, "ground.heads").integers(2**31, size=2)
        fitted.fit(heads, "action", action_all.subset(np.arange(ends[n_action - 1])), steps, int(seeds[0]))
        key = f"{world}{units}"
        if key not in worlds:
            data = world_all if world == "all" else world_all.subset(np.arange(sft_ends[-1]))
            fitted.fit(heads, "state", data, cfg.world_steps, int(seeds[1]))
            worlds[key] = heads.state_mlp
        heads.state_mlp = worlds[key]
        return heads.eval()

    n_world = len(world_all)
    rows: list[tuple[str, tuple | None]] = [("SFT's own linear heads", None)]
    rows += [(f"MLP action head ({n} episodes, {steps} steps) + world model (all {n_world} transitions)",
              (n, steps, "all", cfg.head_units)) for n in counts for steps in head_steps]  # fmt: skip
    rows += [(f"MLP action head ({counts[0]}, {head_steps[0]}) + world model (the SFT's {cfg.episodes} episodes)",
              (counts[0], head_steps[0], "sft", cfg.head_units))]  # fmt: skip
    rows += [(f"linear heads on the same inputs ({counts[0]}, {head_steps[0]}; all transitions)",
              (counts[0], head_steps[0], "all", []))]  # fmt: skip
    header = ["heads", "held-out action CE", "policy", "dyn/copy", "rephrase match", "implausible", "off bench",
              "replay", "match+replay", "easy match", "seconds"]  # fmt: skip
    print("| " + " | ".join(header) + " |\n" + "| --- " * len(header) + "|", flush=True)
    for name, config in rows:
        clock = time.monotonic()
        heads = heads_for(*config) if config else None
        held_loss = fitted.action_loss(heads, action_held) if heads else float("nan")
        fitted.attach(lm, heads)
        with torch.no_grad(), autocast:
            policy = ground.policy_success(LLMPolicy(lm, builder, pad_id), held, params)
            dyn = diag.dynamics_metrics(lm, builder, pad_id, *transitions)
            rephrase = imagined(lm, builder, pad_id, params, "rephrase", args.rollouts, env)
            easy = imagined(lm, builder, pad_id, params, "easy", args.rollouts, env)
        ratio = dyn["dynamics_mse"] / dyn["dynamics_mse_copy_baseline"]
        cells = [held_loss, policy, ratio, *rephrase.values(), easy["match"]]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {time.monotonic() - clock:.0f} |",
              flush=True)  # fmt: skip
    env.close()


if __name__ == "__main__":
    main()
