"""Workflows over the jobs (`taskcut.jobs`): the fleet, compare and its baselines, the demo, their reports; and
the files they share: the own-model YAML, the scores file, base training and the dense control."""
