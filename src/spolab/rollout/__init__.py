"""Rollouts: sampling and teacher-forced scoring (sampler), trajectory records and replay
(trajectories), fresh collection with cached π_ref log-probs (collect), and the stored off-policy
sources with the per-batch mixer (offpolicy)."""
