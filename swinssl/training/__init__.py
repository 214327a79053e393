"""Training loops and what keeps them alive: checkpoints, resume, signals, DDP."""
