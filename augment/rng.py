"""Per-sample random generators: the only source of randomness in ``augment``.

Each draw comes from a generator seeded by (build seed, sample key, role, method, copy), so an image's bytes do
not depend on worker count, order or which other samples are in the build.
"""

from __future__ import annotations

import hashlib

import numpy as np


def sample_rng(seed: int, key: str, *parts: str | int) -> np.random.Generator:
    """A generator for one (sample, purpose); ``parts`` name the purpose, e.g. ``("cf", "shuffle", 0)``."""
    digest = hashlib.sha256("\x00".join([key, *map(str, parts)]).encode()).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])
