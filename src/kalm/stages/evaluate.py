"""The `evaluate` stage: success rate per level of every trained policy, on the same seeded episodes.

    python cli.py evaluate [--params params.yaml]
    python cli.py evaluate --suite my_goals.yaml [--suite ...] --out results.json   # a user's own goal suites

Levels: ``train`` (the 80 training goals with their training phrasings) and the evaluation part of the shipped
``rephrase``, ``easy`` and ``hard`` suites (``Suite.split``: templates held out of imagination), and the same three
scored on the instructions imagination was given (``rephrase_given``, ...: the paper's protocol). Each level has
``evaluate.episodes`` episodes (``easy_episodes`` for the one-step easy levels) whose goal, instruction and initial
ball positions are drawn from the params seed, so every policy and seed meets the same starts. Episodes are stepped
in parallel, one batched policy forward per step. Writes ``metrics/eval.json`` (the summary `dvc exp show` reads:
each row's success per level and novel means, and the grounding and imagination headline figures),
``metrics/eval_details.json`` (with 95 % intervals, per-seed figures, the behaviour row and episode counts),
``plots/eval_success.csv``, ``reports/eval_success.png`` and image strips of a few episodes in ``reports/eval/``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kalm import paths
from kalm.config import Params
from kalm.data import InputFileError, atomic_path, write_json
from kalm.env.rollout import Chooser, EvalEpisode, rollout_success
from kalm.figures import bar_chart, save_strip
from kalm.seeds import seed_stream
from kalm.stats import summarise, wilson
from kalm.tasks import (
    LEVELS,
    RelationGoal,
    Suite,
    parse_goal,
    shipped_suite,
    training_goals,
    training_instructions,
)
from kalm.tasks.world import GIVEN_LEVELS, GIVEN_SUFFIX, NOVEL_LEVELS
from kalm.tracking import log_artifact, log_metrics, stage_run

STAGE = "evaluate"
LLM_ROW = "llm"  # the grounded LLM itself acting in the env, beside the trained policies
log = logging.getLogger(__name__)
STRIP_FRAMES = 8
RENDER_SIZE = 160


def level_tasks(level: str, params: Params) -> list[tuple[str, dict[str, Any]]]:
    """(instruction, goal spec) pairs of a level: training phrasings, the shipped suite's evaluation part, or for a
    ``_given`` level its imagination part (what `imagine` draws from)."""
    if level == "train":
        return [(text, goal.to_spec()) for goal in training_goals() for text in training_instructions(goal)]
    imagination, held_out = shipped_suite(level.removesuffix(GIVEN_SUFFIX)).split(
        params.goals.holdout_fraction, params.seed
    )
    return list((imagination if level.endswith(GIVEN_SUFFIX) else held_out).expand())


def make_episodes(tasks: Sequence[tuple[str, dict[str, Any]]], n: int, rng: np.random.Generator) -> list[EvalEpisode]:
    """``n`` episodes with tasks drawn uniformly and scenes in which the goal does not already hold."""
    from kalm.env.scene import sample_positions

    episodes = []
    for _ in range(n):
        text, spec = tasks[int(rng.integers(len(tasks)))]
        goal = parse_goal(spec)
        while True:
            positions = sample_positions(rng)
            obs = positions.astype(np.float32).reshape(-1)
            if goal.ends_after_one_step or not goal.is_success(obs, 0, obs):
                break
        episodes.append(EvalEpisode(text, spec, positions))
    return episodes


def level_episodes(params: Params) -> dict[str, list[EvalEpisode]]:
    """The fixed evaluation episodes of the four levels and of the three ``_given`` ones (a stream of their own, so
    the four levels' episodes do not depend on them)."""
    out = {}
    for stream, levels in (("evaluate.levels", LEVELS), ("evaluate.given", GIVEN_LEVELS)):
        for i, level in enumerate(levels):
            n = params.evaluate.easy_episodes if scored_by(level) == "easy" else params.evaluate.episodes
            out[level] = make_episodes(level_tasks(level, params), n, seed_stream(params.seed, stream, i))
    return out


def suite_episodes(suite: Suite, params: Params, index: int) -> list[EvalEpisode]:
    """Evaluation episodes of a user's suite (all its templates)."""
    n = params.evaluate.easy_episodes if suite.level == "easy" else params.evaluate.episodes
    return make_episodes(list(suite.expand()), n, seed_stream(params.seed, "evaluate.suite", index))


def policy_chooser(algo: Any, embeddings: dict[str, np.ndarray]) -> Chooser:
    """A trained policy's greedy actions: the state followed by the embedding of the episode's instruction. A
    decision transformer also reads its episode so far and the return still to get (it asks for the goal's success
    reward; each step's reward is the goal's own reward function), so a chooser plays each episode once."""
    from kalm.rl.algos import SequenceActor, greedy_actions, is_sequence_model

    actor = SequenceActor(algo) if is_sequence_model(algo) else None
    last: dict[int, tuple[Any, np.ndarray, int]] = {}  # episode -> (goal, previous state, previous action)

    def choose(states: np.ndarray, episodes: Sequence[EvalEpisode]) -> np.ndarray:
        goals = np.stack([embeddings[e.instruction] for e in episodes])
        observations = np.concatenate([states, goals], axis=1)
        if actor is None:
            return greedy_actions(algo, observations)
        keys = [id(e) for e in episodes]
        tasks = [last[k][0] if k in last else parse_goal(e.goal) for k, e in zip(keys, episodes, strict=True)]
        rewards = [
            goal.reward(last[k][1], last[k][2], state) if k in last else 0.0
            for k, goal, state in zip(keys, tasks, states, strict=True)
        ]
        actions = actor.act(observations, keys, rewards, [goal.success_reward for goal in tasks])
        last.update({k: (goal, state, int(a)) for k, goal, state, a in zip(keys, tasks, states, actions, strict=True)})
        return actions

    return choose


def behaviour_chooser(policy: str) -> Chooser:
    """The scripted behaviour policy, greedy (epsilon 0), reading each episode's goal spec, not its text."""
    from kalm.tasks.behaviour import POLICIES

    act = POLICIES[policy]

    def choose(states: np.ndarray, episodes: Sequence[EvalEpisode]) -> np.ndarray:
        return np.array([act(s, parse_goal(e.goal)) for s, e in zip(states, episodes, strict=True)])

    return choose


def policy_seeds(variant: str, algo: str) -> dict[str | None, list[Path]]:
    """The seed folders of one trained variant x algo: ``{None: folders}``, or ``{level: folders}`` when it was
    trained per novel level (``train.per_level``; a level left out has too few rollouts, ``train.min_imagined``);
    a missing one names the stage that makes it."""
    folder = paths.policy_dir(variant, algo)
    groups: dict[str | None, list[Path]] = {}
    for group, parent in [(None, folder), *((lv, folder / lv) for lv in NOVEL_LEVELS)]:
        seeds = sorted(parent.glob("seed*/"), key=lambda p: int(p.name.removeprefix("seed") or 0))
        if seeds:
            groups[group] = seeds
    # An empty per-level folder is complete (atomic_path): every level had too few rollouts.
    if not folder.is_dir() or (not groups and variant == "baseline"):
        raise FileNotFoundError(f"{folder}: no trained policies (made by `python cli.py train`)")
    return groups


def scored_by(level: str) -> str:
    """The novel level whose per-level policy scores ``level``: the train level by the rephrase one (the paper's
    Fig. 4); a user suite's key (``easy:my_suite``) and a ``_given`` level (``easy_given``) by their level."""
    level = level.split(":")[0].removesuffix(GIVEN_SUFFIX)
    return "rephrase" if level == "train" else level


class Embedder:
    """One goal encoder per encoder name, shared by the policies that use it."""

    def __init__(self) -> None:
        self._encoders: dict[str, Any] = {}

    def table(self, meta: dict[str, Any], texts: Sequence[str], folder: Path) -> dict[str, np.ndarray]:
        """The goal vectors of ``texts`` as the policy in ``folder`` (its ``meta``) was trained to read them."""
        from kalm.llm.reader import goal_encoder

        name = meta["encoder"]
        if name not in self._encoders:
            self._encoders[name] = goal_encoder(name)
        encoder = self._encoders[name]
        trained_on = meta.get("encoder_model")  # grounded models' hashes
        if trained_on is not None and trained_on != encoder.fingerprint:
            raise InputFileError(
                f"{folder}: trained on goal vectors of another grounded model ({trained_on}, now "
                f"{encoder.fingerprint}): re-run `python cli.py train`"
            )
        return encoder.table(texts)


def seed_results(
    folders: Sequence[Path], levels: dict[str, list[EvalEpisode]], embedder: Embedder, max_steps: int
) -> dict[str, dict[str, np.ndarray]]:
    """``{seedK: {level: success per episode}}`` of the policies saved in ``folders``."""
    from kalm.rl.algos import load_policy

    texts = [e.instruction for episodes in levels.values() for e in episodes]
    results = {}
    for folder in folders:
        algo, meta = load_policy(folder)
        choose = policy_chooser(algo, embedder.table(meta, texts, folder))
        results[folder.name] = {level: rollout_success(choose, eps, max_steps) for level, eps in levels.items()}
        log.info("evaluate %s: %s", folder, {lv: s.mean() for lv, s in results[folder.name].items()})
    return results


def evaluate_policies(
    params: Params, levels: dict[str, list[EvalEpisode]], render_dir: Path | None = None
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{policy: {seedK: {level: success per episode}}}`` for every variant x algo and seed; image strips of the
    first seed's first ``evaluate.render`` episodes per level."""
    import torch

    from kalm.rl.algos import load_policy

    torch.set_num_threads(params.train.threads)
    embedder = Embedder()
    texts = [e.instruction for episodes in levels.values() for e in episodes]
    steps = params.env.max_episode_steps
    results: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for variant in paths.VARIANTS:
        for algo_name in params.train.algos:
            name = paths.policy_name(variant, algo_name)
            results[name] = {}
            groups = policy_seeds(variant, algo_name)
            if None not in groups:  # per level: the levels left out (train.min_imagined) are the baseline's
                baseline = results[paths.policy_name("baseline", algo_name)]
                for seed, scores in baseline.items():
                    results[name][seed] = {lv: s for lv, s in scores.items() if scored_by(lv) not in groups}
            for group, folders in groups.items():
                own = {lv: eps for lv, eps in levels.items() if group in (None, scored_by(lv))}
                for seed, per_level in seed_results(folders, own, embedder, steps).items():
                    results[name].setdefault(seed, {}).update(per_level)
                if render_dir is None or not params.evaluate.render:
                    continue
                algo, meta = load_policy(folders[0])
                choose = policy_chooser(algo, embedder.table(meta, texts, folders[0]))
                for level, episodes in own.items():
                    for i, episode in enumerate(episodes[: params.evaluate.render]):
                        out = render_dir / name / f"{level}-{i}.png"
                        render_episode(choose, episode, steps, out, f"{name} · {level}")
    return results


def evaluate_llm(params: Params, levels: dict[str, list[EvalEpisode]]) -> dict[str, dict[str, np.ndarray]]:
    """The grounded LLM as a policy (the paper's Fig. 5 "LLM as policy") on the same episodes as the policies:
    ``{"seed0": {level: success per episode}}`` (greedy, so one run)."""
    import torch

    from kalm.llm.device import resolve_bf16, resolve_device
    from kalm.llm.model import load_grounded, sample_builder
    from kalm.llm.policy import LLMPolicy

    device = resolve_device(params.llm.device)
    dtype = torch.bfloat16 if resolve_bf16(params.ground.precision, device) else torch.float32
    lm, tokenizer, _ = load_grounded(paths.GROUNDED_MODEL, base_dir=paths.BASE_MODEL, dtype=dtype)
    choose = LLMPolicy(lm.to(device), sample_builder(tokenizer, lm), tokenizer.pad_token_id)
    steps = params.env.max_episode_steps
    success = {level: rollout_success(choose, episodes, steps) for level, episodes in levels.items()}
    log.info("evaluate llm: %s", {lv: s.mean() for lv, s in success.items()})
    return {"seed0": success}


def evaluate_behaviour(params: Params, levels: dict[str, list[EvalEpisode]]) -> dict[str, Any]:
    """The scripted behaviour policy, greedy, on the levels whose goals it can pursue (relations): the ceiling of
    what the offline data teaches, on the same episodes as the policies."""
    relation_levels = {
        level: episodes
        for level, episodes in levels.items()
        if all(isinstance(parse_goal(e.goal), RelationGoal) for e in episodes)
    }
    choose = behaviour_chooser(params.collect.policy)
    success = {lv: rollout_success(choose, eps, params.env.max_episode_steps) for lv, eps in relation_levels.items()}
    return {
        "policy": params.collect.policy,
        **{lv: round(float(s.mean()), 4) for lv, s in success.items()},
        "ci95": {lv: wilson(int(s.sum()), len(s)) for lv, s in success.items()},
    }


def render_episode(choose: Chooser, episode: EvalEpisode, max_steps: int, out: Path, title: str) -> None:
    """Roll out one episode with rendering and save its strip."""
    from kalm.env import CLEVRRobotEnv
    from kalm.env.rollout import play

    env = CLEVRRobotEnv(render_mode="rgb_array", max_episode_steps=max_steps, width=RENDER_SIZE, height=RENDER_SIZE)
    obs, _ = env.reset(options={"goal": episode.goal, "positions": episode.positions})
    rollout = play(env, obs, lambda o: int(choose(o[None], [episode])[0]), render=True)
    env.close()
    outcome = "success" if rollout.success else "failure"
    save_strip(rollout.frames, f"{title}: “{episode.instruction}” — {outcome}", out, STRIP_FRAMES)


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """Each row's success per level and its novel means, without intervals and per-seed figures."""
    return {name: {k: v for k, v in entry.items() if k not in ("ci95", "seeds")} for name, entry in summary.items()}


def upstream_headline() -> dict[str, Any]:
    """The grounding and imagination figures the summary carries beside the policies', from those stages' metrics
    files (a grounded model or rollouts made outside the pipeline have none)."""
    out: dict[str, Any] = {}
    if (ground_file := paths.metrics_file("ground")).is_file():
        ground = json.loads(ground_file.read_text(encoding="utf-8"))
        out["ground"] = {k: ground[k] for k in ("policy_success", "generation_match_rate") if k in ground}
        out["ground"]["dynamics_vs_copy"] = round(ground["dynamics_mse"] / ground["dynamics_mse_copy_baseline"], 4)
    if (imagine_file := paths.metrics_file("imagine")).is_file():
        levels = json.loads(imagine_file.read_text(encoding="utf-8"))["levels"]
        out["imagine"] = {lv: {"match_rate": m["match_rate"], "kept": m["kept"]} for lv, m in levels.items()}
    return out


def write_success_csv(summary: dict[str, Any], levels: Sequence[str], out: Path) -> None:
    """One row per policy and level, for `dvc plots`."""
    with atomic_path(out) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["policy", "level", "success", "label"])
        for name, entry in summary.items():
            for level in levels:
                writer.writerow([name, level, entry[level], f"{name} / {level}"])


def run(params: Params) -> dict[str, Any]:
    """Evaluate every variant x algo x seed and write metrics, plot data, the bar chart and episode strips."""
    for variant in paths.VARIANTS:
        for algo in params.train.algos:
            policy_seeds(variant, algo)  # fail on missing policies before any work
    if not (paths.GROUNDED_MODEL / "kalm.json").is_file():
        raise FileNotFoundError(f"{paths.GROUNDED_MODEL}: missing (made by `python cli.py ground`)")
    with stage_run(STAGE, params, sections=("env", "collect", "evaluate")):
        levels = level_episodes(params)
        with atomic_path(paths.EVAL_REPORTS) as render_tmp:
            render_tmp.mkdir(parents=True)
            results = evaluate_policies(params, levels, render_dir=render_tmp)
        results[LLM_ROW] = evaluate_llm(params, levels)
        summary = summarise(results, list(levels))
        behaviour = evaluate_behaviour(params, levels)
        metrics = {**summary, "behaviour": behaviour, "episodes": {lv: len(e) for lv, e in levels.items()}}
        summary_only = {**headline(summary), **upstream_headline()}
        write_success_csv(summary, list(levels), paths.EVAL_SUCCESS)
        png = paths.EVAL_CHART
        with atomic_path(png) as tmp:
            bar_chart(summary, list(levels), tmp)
        write_json(paths.EVAL_METRICS, summary_only)  # what `dvc metrics show` / `dvc exp show` read
        write_json(paths.EVAL_DETAILS, metrics)
        log_metrics(metrics)
        log_artifact(png)
        log_artifact(paths.EVAL_SUCCESS)
        log_artifact(paths.EVAL_REPORTS, artifact_path="episodes")
    return metrics


def evaluate_suites(params: Params, suites: Sequence[Suite], out: Path) -> dict[str, dict[str, float]]:
    """Evaluate the trained policies on users' goal suites; writes ``{policy: {level: success}}`` to ``out`` only."""
    keys = []
    for suite in suites:
        key = suite.level if [s.level for s in suites].count(suite.level) == 1 else f"{suite.level}:{suite.source}"
        keys.append(key)
    levels = {key: suite_episodes(suite, params, i) for i, (key, suite) in enumerate(zip(keys, suites, strict=True))}
    results = evaluate_policies(params, levels)
    table = {
        name: {key: round(float(np.mean([s[key].mean() for s in seeds.values()])), 4) for key in levels}
        for name, seeds in results.items()
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    return table
