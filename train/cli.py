"""The ``train`` command. The trainer itself is not written yet; until then this says so instead of pretending."""

import sys


def main() -> None:
    print(
        "train: the trainer is not implemented yet. `augment build` already writes the shards it will read; "
        "see README.md.",
        file=sys.stderr,
    )
    sys.exit(2)
