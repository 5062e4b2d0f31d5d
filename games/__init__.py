"""What is played and who judges it: exact matrix and Markov games (``matrix``, ``markov``, an
RLlib environment in ``rllib_env``), the conversation game (``conversation``), multi-turn tasks
(``tasks``), preference judges (``judges``) and demonstrations (``demonstrations``).

Nothing here knows about roles, jobs or training: from the project, games import only
``framework.errors``.
"""
