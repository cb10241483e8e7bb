"""Training: the step (pure loss computation), single-process loops, checkpoints. Ray lives in worker.py."""
