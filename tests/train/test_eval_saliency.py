"""The saliency AUPR's images: a class-balanced subset chosen by key, whatever the stream order."""

from __future__ import annotations

import hashlib
import random

import torch

from train.evaluate import SaliencySubset


def class_ordered_batches(order: list[int], batch_size: int = 16):
    """Batches of a split of 3 classes x 40 images, every third without an object mask, in the given order."""
    keys = [f"original_{i:06d}" for i in range(120)]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        labels = torch.tensor([i // 40 for i in idx])
        yield {
            "key": [keys[i] for i in idx],
            "label": labels,
            "has_object": torch.tensor([i % 3 != 0 for i in idx]),
            "image": torch.stack([labels.float(), torch.tensor(idx, dtype=torch.float), labels.float()], 1)
            .view(-1, 3, 1, 1)
            .expand(-1, 3, 4, 4)
            .clone(),  # channel 0: the label, channel 1: the image's index
            "mask": torch.ones(len(idx), 1, 4, 4),
        }


def choose(order: list[int], budget: int) -> tuple[list[int], torch.Tensor]:
    subset = SaliencySubset(budget, 3)
    for batch in class_ordered_batches(order):
        subset.offer(batch)
    images, masks, labels = subset.chosen()
    assert images.shape[0] == masks.shape[0] == labels.shape[0]
    assert torch.equal(images[:, 0, 0, 0].long(), labels)  # each image travels with its own label
    return labels.tolist(), images


def test_the_subset_is_class_balanced_although_the_split_is_class_ordered() -> None:
    labels, _ = choose(list(range(120)), budget=12)
    assert len(labels) == 12 and [labels.count(c) for c in range(3)] == [4, 4, 4]
    # the first images (the overlay sheet shows them) already span the classes
    assert sorted(labels[:3]) == [0, 1, 2]


def test_the_subset_does_not_depend_on_stream_order() -> None:
    forward = list(range(120))
    shuffled = forward.copy()
    random.Random(0).shuffle(shuffled)
    a, images_a = choose(forward, budget=9)
    b, images_b = choose(shuffled, budget=9)
    assert a == b and torch.equal(images_a, images_b)  # the same images (by index), in the same order
    index = images_a[:, 1, 0, 0].long().tolist()
    assert all(i % 3 != 0 for i in index)  # only images with an object mask

    # the 3 masked images of each class whose keys hash lowest: chosen by key, not by position in the stream
    def priority(i: int) -> int:
        return int.from_bytes(hashlib.blake2b(f"saliency:original_{i:06d}".encode(), digest_size=8).digest(), "big")

    masked = [[i for i in range(c * 40, c * 40 + 40) if i % 3] for c in range(3)]
    expected = {i for images in masked for i in sorted(images, key=priority)[:3]}
    first = {i for images in masked for i in images[:3]}
    assert set(index) == expected != first


def test_no_budget_means_no_saliency_pass() -> None:
    labels, images = choose(list(range(120)), budget=0)
    assert labels == [] and images.shape[0] == 0
