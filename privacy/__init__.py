"""Differentially private learning: the DP learner, accounting and auditing (coming later)."""
