"""train: the lean trainer that streams ``augment`` shards.

Stages: ``data`` (stream) -> ``models`` -> ``losses`` -> ``train`` (the loop) -> ``evaluate`` / ``metrics`` ->
``report``; ``config`` holds the presets; ``cli`` is the Typer front end (``train fit|eval|report|study``).

Imports run one way (tests/test_layout.py: no circle): ``cli`` imports the rest and nothing imports it; the two
report builders, ``report`` (``train report``) and ``study`` (``train study``'s REPORT.md, which reads ``report``'s
helpers), never import the trainer's front end. What several of them read lives below them: ``terms`` (the
objective's terms, listed once), ``commands`` (a run's `train fit` command line), ``splits`` (a build's test
splits) and ``progress`` (a run's bar or tagged log lines).
"""
