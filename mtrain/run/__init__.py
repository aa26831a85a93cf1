"""What a training run leaves on disk and how it is read back: checkpoints, averaging, the run directory, metrics."""
