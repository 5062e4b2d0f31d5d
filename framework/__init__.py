"""alignplay's framework: a floor of pieces every job uses, under a roof of jobs.

The floor — ``errors``, ``records`` (what crosses role boundaries, with Arrow schemas),
``batching``, ``losses`` (pure, tested), ``evaluation``, ``checkpoint``, ``models`` (the
transformers edge), ``config`` and ``algorithms`` (one file per method family, reached through
hooks) — imports neither the roof, the roles (``actors``), ``privacy`` nor ``games``.

The roof — ``jobs`` (one file per ``job:`` value, each holding its loop) — wires roles together;
``cli`` parses the command line into it.
"""
