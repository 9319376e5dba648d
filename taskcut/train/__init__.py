"""Training and fine-tuning: the one fit loop, evaluation over a split, checkpoints, torchrun."""
