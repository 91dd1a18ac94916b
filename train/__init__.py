"""train: the lean trainer that streams ``augment`` shards.

Stages: ``data`` (stream) -> ``models`` -> ``losses`` -> ``train`` (the loop) -> ``evaluate`` / ``metrics`` ->
``report``; ``config`` holds the presets; ``cli`` is the Typer front end (``train fit|eval|report``).
"""
