"""Chains of stages on model files: prune, the training pipeline, baselines, compare, report, demo."""
