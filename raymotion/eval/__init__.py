"""Evaluation: pose and shape metrics (pure tensor functions) and the evaluation driver."""
