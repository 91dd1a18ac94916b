"""``annotation`` and ``box``: the dataset's own annotation, or only its boxes (nothing is produced or gated)."""

from __future__ import annotations

from augment.mask_sources import MaskSource, register

register(MaskSource("annotation", "the dataset's own mask, else its boxes, as released (the default)", None))
register(MaskSource("box", "the boxes only, even where the dataset has a mask: the F hole is all outside them", None))
