"""The training loop and what it needs: schedules, the step, checkpoints, metrics."""
