"""Shifted test splits (``augment build --shifted-tests``): the Backgrounds Challenge variants (Xiao et al. 2020) of
any dataset's test splits, so that BG-gap and background reliance can be measured on the user's own data.

For every *base* split ``S`` (a split without CF/F images, not already a shifted split of the dataset, whose samples
have object masks), and every sample of ``S`` with an object, the build writes one record per variant:

- ``S.only_fg``: the object on black (the F hole, the background, set to 0);
- ``S.no_fg``: the object region black (its mask is kept, as IN-9's no_fg keeps its fg_mask);
- ``S.only_bg_t``: the object's rectangle filled by the ``tile`` infill (no object is left, so no mask);
- ``S.mixed_same``, ``S.mixed_rand``, ``S.mixed_next``: the object pasted by the ``mixed-rand`` infill on a donor's
  only_bg_t; the donor is another sample of ``S`` of the same class, of a uniformly drawn other class, or of the next
  class (c + 1 mod K, or the next one after it that ``S`` has).

A variant record's JSON carries ``shifted``: the base split and key, the variant and, for the mixed variants, the
donor's key, label and class. Donors are drawn from ``sample_rng(seed, base key, "shifted", variant)``, so the bytes
do not depend on workers or order. A split is the base of nothing when its samples have only boxes and the mask
source makes no masks (``--masks-from annotation``): the manifest's ``shifted_tests.skipped`` says so and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from augment import infill
from augment.datasets import Dataset, Ref, Sample, SplitPlan
from augment.donors import Donors, draw_donor
from augment.infill.mixed_rand import Donor
from augment.mask_sources import MaskSource
from augment.masks import cf_hole, f_hole, object_mask
from augment.rng import sample_rng

VARIANTS = {  # name -> what it shows, recorded in the manifest
    "only_fg": "the object on black",
    "no_fg": "the object region black; mask.png is where the object was",
    "only_bg_t": "the object's rectangle tiled over (the tile infill); no object, so no mask",
    "mixed_same": "the object on the tiled background of another sample of its class",
    "mixed_rand": "the object on the tiled background of a sample of a uniformly drawn other class",
    "mixed_next": "the object on the tiled background of a sample of the next class (c + 1 mod K, else the next "
    "class the split has)",
}
DONOR_CLASS = {"mixed_same": "the same class", "mixed_rand": "another class", "mixed_next": "the next class"}
BLACK = 0


def split_name(base: str, variant: str) -> str:
    """``<base>.<variant>``: a split name, and so the folder of its shards."""
    return f"{base}.{variant}"


def variant_key(key: str, variant: str) -> str:
    """A variant record's key: the base key and the variant (no dots: webdataset splits field names at them)."""
    return f"{key}_{variant}"


@dataclass(frozen=True)
class Generated:
    """A generated split: its base split, its variant, and the base indices of its samples, in source order."""

    base: str
    variant: str
    indices: np.ndarray


@dataclass(frozen=True)
class ShiftedPlans:
    """Every split of a build: the dataset's own and the generated ones, each right after its base."""

    plans: dict[str, SplitPlan]
    generated: dict[str, Generated]
    skipped: dict[str, str]  # split -> why no variants were made of it
    left_out: dict[str, str] = field(default_factory=dict)  # base split -> which of its annotated samples got none

    def bases(self) -> list[str]:
        return list(dict.fromkeys(g.base for g in self.generated.values()))


def plan_splits(dataset: Dataset, enabled: bool, source: MaskSource) -> ShiftedPlans:
    """The build's splits; with ``enabled``, the variants of every base split too, made of the samples that will
    have an object mask under the mask ``source`` (``--masks-from``): their own outline (annotation), one the source
    makes from the box (grabcut, sam), or one it finds without a box (cam). ``--masks-from box`` has none."""
    own = dataset.splits()
    if not enabled:
        return ShiftedPlans(own, {}, {})
    already = set(getattr(dataset, "shifted_splits", ()))
    plans: dict[str, SplitPlan] = {}
    generated: dict[str, Generated] = {}
    skipped: dict[str, str] = {}
    left_out: dict[str, str] = {}
    for split, plan in own.items():
        plans[split] = plan
        if plan.augment or split in already:  # training splits, and the dataset's own shifted splits
            continue
        usable = [i for i, r in enumerate(plan.refs) if outlined(r, source)]
        if not usable:
            skipped[split] = why_skipped(plan, source)
            continue
        boxed = sum(r.annotated for r in plan.refs) - len(usable)
        if boxed > 0:
            left_out[split] = (
                f"{boxed} of its {len(plan.refs)} samples have boxes but no object masks and get no "
                "variants; pass --masks-from grabcut (or sam, cam) to make masks"
            )
        indices = np.array(usable, dtype=np.int64)
        for variant in VARIANTS:
            name = split_name(split, variant)
            refs = tuple(
                Ref(variant_key(plan.refs[i].key, variant), plan.refs[i].label, variant != "only_bg_t") for i in usable
            )
            plans[name] = SplitPlan(refs, augment=False)
            generated[name] = Generated(split, variant, indices)
    return ShiftedPlans(plans, generated, skipped, left_out)


def outlined(ref: Ref, source: MaskSource) -> bool:
    """Whether the sample will have an object mask, not a box, under ``source``."""
    if source.name == "box":
        return False
    if source.produce is None:  # annotation: the dataset's own masks
        return ref.annotated and ref.segmented
    return ref.annotated or not source.needs_box


def why_skipped(plan: SplitPlan, source: MaskSource) -> str:
    if not any(r.annotated for r in plan.refs) and source.needs_box:
        return "no sample has an object annotation (mask or box)"
    if source.name == "box":
        return "--masks-from box stores boxes, not object masks; use annotation, grabcut, sam or cam"
    return "its samples have boxes but no object masks; pass --masks-from grabcut (or sam, cam) to make masks"


def manifest_section(shifted: ShiftedPlans) -> dict[str, Any]:
    """The manifest's ``shifted_tests``: what each variant is, which split pairs with which, and what was skipped.

    ``pairs[base]`` names the base's variant splits, and the two paired metrics the trainer computes from them:
    BG-gap (mixed_same against mixed_rand) and background reliance (base against a mixed split, the background's
    class read from each record's ``shifted.donor_label``).
    """
    pairs = {}
    for base in shifted.bases():
        splits = {v: split_name(base, v) for v in VARIANTS}
        pairs[base] = {
            "original": base,
            "variants": splits,
            "bg_gap": {"same": splits["mixed_same"], "rand": splits["mixed_rand"]},
            "background_reliance": {
                "original": base,
                "shifted": [splits["mixed_next"], splits["mixed_rand"]],
                "background_class": "shifted.donor_label",
            },
        }
    return {"variants": VARIANTS, "pairs": pairs, "skipped": shifted.skipped, "left_out": shifted.left_out}


def make_variant(
    sample: Sample,
    index: int,
    split: str,
    variant: str,
    dataset: Dataset,
    donors: Donors | None,
    seed: int,
    on_error: str,
    refine: Callable[[Sample], Sample] | None = None,
) -> Sample | None:
    """The ``variant`` of base ``sample`` (loaded, with its mask; ``index`` in its split), stored in ``split``; None
    when it has no object mask: no object, or only its boxes (a ``--masks-from`` mask that failed the quality gate
    falls back to them), which would cut the variant along the box instead of the object. ``donors`` index the base
    split's samples with an object; ``refine`` gives a donor its
    mask when the mask source needs no box (cam).

    Object pixels stay those of the original, bit for bit, in every variant but no_fg and only_bg_t.
    """
    shape = sample.image.shape[:2]
    rect, background = cf_hole(sample.mask, sample.boxes, shape), f_hole(sample.mask, sample.boxes, shape)
    if rect is None or background is None or sample.mask is None:
        return None
    rng = sample_rng(seed, sample.key, "shifted", variant)
    info: dict[str, Any] = {"base_split": sample.split, "base_key": sample.key, "variant": variant}
    mask, boxes, group = sample.mask, sample.boxes, None  # a changed background is not the group's any more
    if variant == "only_fg":
        image = infill.paste(sample.image, background, BLACK)
    elif variant == "no_fg":
        image, group = infill.paste(sample.image, object_mask(sample.mask, sample.boxes, shape), BLACK), sample.group
    elif variant == "only_bg_t":
        image, mask, boxes = infill.INFILLS["tile"].fill(sample.image, rect, rng), None, None
    else:
        pick = donor_pick(variant, sample.label, index, donors)
        donor, donor_rect = draw_donor(
            sample, sample.split, dataset, pick, rng, on_error, refine, purpose=split, wanted=DONOR_CLASS[variant]
        )
        image = infill.INFILLS["mixed-rand"].fill(sample.image, background, rng, donor=Donor(donor.image, donor_rect))
        info |= {"donor_key": donor.key, "donor_label": donor.label, "donor_class": donor.class_name}
    return replace(
        sample,
        key=variant_key(sample.key, variant),
        split=split,
        image=image,
        mask=mask,
        boxes=boxes,
        group=group,
        shifted=info,
    )


def donor_pick(variant: str, label: int, index: int, donors: Donors | None):
    """How a mixed variant of base sample ``index`` (of ``label``) draws its donor's base index, or None without
    donors: another sample of the class (``index`` only when it is the class's one sample), a sample of another
    class, or of the next class."""
    if donors is None:
        return None
    if variant == "mixed_same":
        return lambda rng: donors.pick_same(label, rng, index)
    if variant == "mixed_rand":
        return lambda rng: donors.pick(label, rng)
    return lambda rng: donors.pick_next(label, rng)
