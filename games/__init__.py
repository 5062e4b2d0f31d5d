"""Games, tasks and judges: exact matrix/Markov games and (later) conversation tasks."""
