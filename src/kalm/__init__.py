"""KALM: Knowledgeable Agents from Language Model rollouts, reproducible end to end."""
