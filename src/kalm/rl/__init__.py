"""Offline RL for goal-conditioned policies: goal encoder, d3rlpy datasets and algorithms, MLflow logging.

Submodules are imported explicitly (``from kalm.rl.dataset import ...``) so that importing the package stays light;
``kalm.rl`` never imports ``kalm.llm``.
"""


def _silence_gym_notice() -> None:
    """d3rlpy imports the deprecated ``gym`` (for env helpers nothing here uses), whose import prints a notice from
    ``gym_notices`` to stderr: a print, not a warning, so no warnings filter reaches it. Emptying that table drops just
    this notice; every warning still shows."""
    try:
        from gym_notices import notices
    except ImportError:
        return
    notices.notices.clear()


_silence_gym_notice()
