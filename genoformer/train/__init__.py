"""Training: the config, the data it reads, the loop (exact resume, torchrun), losses and metrics."""
