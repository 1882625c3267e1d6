"""Sampling, teacher-forced scoring and (later) trajectories, replay and off-policy sources."""
