"""Training: the step's loss (step.py), the update (update.py), the one training loop (worker.py, Ray Train
workers or local mode), its launch and resource plan (launch.py, plan.py), checkpoints and reports."""
