"""Ray actors as plain classes: rollout generators, the preference judge, learners (coming next)."""
