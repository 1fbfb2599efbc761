"""Offline RL for goal-conditioned policies: goal encoder, d3rlpy datasets and algorithms, MLflow logging.

Submodules are imported explicitly (``from kalm.rl.dataset import ...``) so that importing the package stays light;
``kalm.rl`` never imports ``kalm.llm``.
"""
