"""The roles of a run as plain classes: ``RolloutGenerator`` (``generator``, with its generation
backends in ``backends``), ``PreferenceJudge`` (``judge``) and ``Learner`` (``learner``).
``remote`` is the one place that makes them Ray actors (or runs them in this process) and calls
them through typed handles."""
