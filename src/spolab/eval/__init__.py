"""Evaluation metrics: pass@k with bootstrap CIs and per-problem diversity."""
