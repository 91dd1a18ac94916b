"""Stream ``augment build`` shards into training and evaluation batches, from a local folder or any fsspec URL.

The trainer knows only the shard schema (``augment.contract.schema``) and treats shards and manifests as untrusted:
it reads the manifest within ``schema.MAX_MANIFEST_BYTES`` and checks its structure and that each split's count is
its shards' (``read_manifest``); it reads shards with ``augment.contract.shards.iter_records`` (regular files inside
the build only, bounded members, nothing unpickled, never past a shard's size in the manifest), checks every record
with ``augment.contract.schema.RecordCheck``, the validator of ``augment verify`` (labels, fields, groups, image
headers against the build's image_size), keeps only the fields it decodes (images, the PNG mask, json, cls), hashes
each shard as it streams and compares its size, sha256 and record count with the manifest at its end; what it cannot
use goes to the run's ``train.ledger.Ledger``, which stops the run or, within ``--max-bad-samples``, counts and lists
it.

The original, its CF and F images and its mask get the **same** random crop and flip: one draw per sample
(``draw_view``) applied to every view by slicing (``apply_view``); evaluation takes the centre crop. Stochastic
fields stored in K copies use copy ``epoch % K``. Images leave the workers as uint8 and are normalised once per batch
where the model runs (``prepare``).

Training reads a fixed number of samples per epoch: ``steps = num_samples // (batch_size * world_size)`` batches
on every rank, so DDP ranks never wait on each other at the end of an epoch. Each (rank, DataLoader worker) slot
reads its own share, cycling through it when it runs short (uneven shards). When a slot has its epoch's samples, it
still reads the rest of its share's shards, open or not yet opened, to their ends, so that by the end of the first
epoch every shard's record count was compared with the manifest: a count that is not the shards' stops the run
then (more records than the manifest gives stop it whatever ``--max-bad-samples``), rather than train on part of
the split, or cycle it, for as long as the manifest says.

Mixing does not trust the writer: a build of shard format 1, or another tool's, stores samples in source order,
which lists them class by class, so a shard may hold a class or two. A DataLoader batch comes whole from one worker,
so each slot's own stream must be a random draw of the split:

- the shard order is shuffled per epoch (and per pass over the split), the same order on every slot;
- a slot reads up to ``POOL`` of its shards at once and draws each sample from one of them at random (weighted by
  the samples it has left), refilling the pool from its list as shards run out; the result goes through the
  ``shuffle_buffer``;
- at least ``POOL`` shards per slot (``len(shards) >= slots * POOL``): slot ``s`` of ``n`` takes every n-th shard;
- fewer: every slot reads every shard and keeps its own share of each shard's samples (sample ``j`` of the shard at
  position ``p`` when ``(j + p) % n == (s + epoch) % n``), so that a slot's pool holds as many shards as the split
  can give it; the price is that every slot reads every shard's bytes (build with a smaller ``--shard-size`` to
  avoid it).

The pool mixes shards, not the samples inside one (only the shuffle buffer does): a build of a few shards that each
hold long runs of many classes, each run longer than the shuffle buffer, stays poorly mixed: its batches hold
fewer classes than a random draw of the split would. ``augment build`` writes each split in a seeded random order
(docs/FORMAT.md, "Sample order"), so its shards are mixed already.

Every random draw is seeded by (seed, epoch, rank, worker), so an epoch's data is the same after ``--resume``.
Evaluation reads every sample once, shards split over workers whole (or per sample when there are fewer shards
than workers), each shard in file order, and takes the centre ``crop`` of the stored image (the paper's "resize to
256, centre-crop 224": the build stores images at its ``image_size``, the 256 of the paper).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchcodec.decoders import decode_jpeg, decode_png
from torchvision import tv_tensors
from torchvision.transforms import v2

from augment.contract import encode, schema, shards
from augment.contract.shards import Limits, ShardCheck, ShardError
from train.ledger import DataError, Ledger, verify_hint

log = logging.getLogger(__name__)
# decode_image hands the decoders tensors over read-only bytes, which they only read; torch warns about that once per
# process, so that once is spent here, silenced
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.frombuffer(b"\0", dtype=torch.uint8)
MAX_MANIFEST_BYTES = schema.MAX_MANIFEST_BYTES  # one bound for every reader of a manifest
# Shards a training slot reads at once. With class-pure shards (a format-1 build of a class-ordered source) the
# pool's classes are those of POOL random shards: large enough that a batch holds nearly as many distinct classes as
# a random draw of the split (for IN-9's 9 classes in 45 shards), where whole shards read one after another give a
# batch less than half of them. An open shard costs a file handle (or a streaming connection, for URLs) and one
# record's bytes. POOL is also the least number of shards per slot for whole-shard assignment: from there a slot's
# own shards fill its pool, so it mixes as well as reading every shard would, at 1/slots of the reads.
POOL = 32
# what json, int() and PIL raise on bad bytes (PIL: SyntaxError, EOFError and struct.error from some decoders)
DECODE_ERRORS = (OSError, ValueError, KeyError, RecursionError, EOFError, SyntaxError, struct.error)


@dataclass
class Fields:
    """Which CF and F images a run reads, resolved against the field names the manifest lists for a split
    (``stored``): the trainer knows the shard format only through the manifest, not through augment's registry."""

    cf: list[str] = field(default_factory=list)
    f: list[str] = field(default_factory=list)
    stored: tuple[str, ...] = ()  # the split's fields, manifest["splits"][split]["fields"]; ShardStream sets them

    def copies(self, role: str, method: str) -> list[str]:
        """The stored fields of one method, in copy order: ``cf.tile.jpg``, or ``f.shuffle.0.jpg``, ``.1.jpg``..."""
        prefix = f"{role}.{method}."
        found = [n for n in self.stored if n.startswith(prefix) and n.endswith(".jpg")]
        copy = {n: n[len(prefix) : -len(".jpg")] for n in found}
        return sorted((n for n in found if copy[n] == "" or copy[n].isdigit()), key=lambda n: int(copy[n] or 0))

    def names(self, epoch: int) -> dict[str, str]:
        """role.method -> the field to read this epoch (copy ``epoch % copies`` of a method stored in copies)."""
        out = {}
        for role, methods in (("cf", self.cf), ("f", self.f)):
            for m in methods:
                names = self.copies(role, m)
                if not names:
                    raise KeyError(f"{role}.{m}: no such field among {', '.join(self.stored)}")
                out[f"{role}.{m}"] = names[epoch % len(names)]
        return out


def check_fields(manifest: dict[str, Any], fields: Fields, split: str = "train") -> None:
    """Refuse a run that asks for CF/F images the build did not make, naming what it has."""
    stored = replace(fields, stored=tuple(manifest["splits"][split]["fields"]))
    for role, methods in (("cf", fields.cf), ("f", fields.f)):
        built = manifest["methods"][role]
        for m in methods:
            if m not in built or not stored.copies(role, m):  # a method's name, not a field's (shuffle.0)
                raise ValueError(f"--{role} {m}: the shards hold no {role}.{m} images; built with {built or 'none'}")


def assign(urls: list[str], slot: int, slots: int, epoch: int, per_slot: int = POOL) -> tuple[list[str], int, int]:
    """The shards slot ``slot`` of ``slots`` reads, and which of their samples it keeps: (urls, every, offset),
    keeping sample j of the shard at position p of ``urls`` when ``(j + p) % every == offset``.

    Whole shards are dealt out when every slot gets at least ``per_slot`` of them; otherwise every slot reads every
    shard and keeps its share of each."""
    if len(urls) >= slots * per_slot:
        return urls[slot::slots], 1, 0
    return urls, slots, (slot + epoch) % slots  # rotate, so a slot does not see the same samples every epoch


def share(steps: int, worker: int, workers: int) -> int:
    """Batches worker ``worker`` makes of a rank's ``steps``: the DataLoader takes them round-robin, from worker 0."""
    return steps // workers + (worker < steps % workers)


class ShardStream(IterableDataset):
    """One split of a build as an iterable of sample dicts, split across DDP ranks and DataLoader workers.

    ``train=True``: shards interleaved and shuffled, randomly cropped and flipped, exactly ``steps * batch_size``
    samples per rank and epoch (see the module docstring). ``train=False``: every sample once, its centre ``crop``
    (an image smaller than ``crop`` is first resized so that its shorter side is ``crop``); ``rank`` and
    ``world_size`` are ignored (evaluation runs on one process).
    """

    def __init__(
        self,
        root: str | Path,
        manifest: dict[str, Any],
        split: str,
        fields: Fields,
        train: bool,
        crop: int,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        batch_size: int = 1,
        rank: int = 0,
        world_size: int = 1,
        fraction: float = 1.0,
        ledger: Ledger | None = None,
    ):
        self.split, self.train, self.crop = split, train, crop
        self.fields = replace(fields, stored=tuple(manifest["splits"][split]["fields"]))
        self.seed, self.shuffle_buffer, self.epoch = seed, shuffle_buffer, 0
        self.batch_size, self.rank, self.world_size = batch_size, rank if train else 0, world_size if train else 1
        self.inside = None if shards.is_url(root) else root  # a local shard must lie in the build folder
        self.urls = [shards.join(root, s["path"]) for s in manifest["splits"][split]["shards"]]
        self.entries = {shards.join(root, s["path"]): s for s in manifest["splits"][split]["shards"]}
        self.lengths = {url: entry["num_samples"] for url, entry in self.entries.items()}
        self.ledger = Ledger(root=str(root)) if ledger is None else ledger  # by default, one bad sample stops it
        self.fraction = fraction  # keep this share of the samples (a fixed subset, chosen by key: see in_subset)
        self.num_samples = max(1, round(manifest["splits"][split]["num_samples"] * fraction))
        self.steps = self.num_samples // (batch_size * self.world_size)  # batches per rank and epoch, when training
        self.num_classes = len(manifest["dataset"]["classes"])
        self.limits = Limits.for_image_size(manifest["image_size"])
        self.rules = schema.RecordCheck(manifest, split, self.limits.pixels)  # augment verify's rules
        self.root = str(root)
        self._names: tuple[int, dict[str, str]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def field_names(self) -> dict[str, str]:
        """role.method -> the field read this epoch (``Fields.names``), worked out once per epoch, not per sample."""
        if self._names is None or self._names[0] != self.epoch:
            self._names = (self.epoch, self.fields.names(self.epoch))
        return self._names[1]

    def __len__(self) -> int:
        return self.steps * self.batch_size if self.train else self.num_samples

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The samples of this slot; in a DataLoader worker, a DataError ends them and is left in the ledger for
        the main process to raise (see ``train.ledger``)."""
        try:
            yield from self.samples()
        except DataError as e:
            if get_worker_info() is None:
                raise
            self.ledger.stop(e)

    def samples(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slot, slots = self.rank * workers + worker, self.world_size * workers
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}")
        torch.manual_seed(rng.getrandbits(63))  # the crop and flip draws of this slot, this epoch
        done = {"quota": False}  # set when the epoch has its samples: the open shards are then read to their ends
        if self.train:
            quota = self.batch_size * share(self.steps, worker, workers)
            raw = self.cycle(slot, slots, rng, done)
        else:
            quota = None  # every sample, and every shard to its end (where its checksum is compared)
            raw = self.records(*assign(self.urls, slot, slots, 0, per_slot=1))  # no mixing needed: shards whole
        made, failed = 0, 0
        try:
            for sample in raw if quota != 0 else ():
                try:
                    decoded = self.decode(sample)
                except DECODE_ERRORS as e:
                    problem = f"{type(e).__name__}: {e}"
                    self.ledger.record(ShardError(sample["__url__"], problem, key=sample["__key__"]))
                    failed += 1
                    if self.train and failed > self.num_samples:  # a whole pass over this slot's share, none good
                        raise DataError(
                            f"{self.split}: no sample of {len(self.urls)} shard(s) decodes; the last: "
                            f"{sample['__key__']} in {sample['__url__']}"
                        ) from e
                    continue
                made, failed = made + 1, 0
                yield decoded
                if made == quota:
                    done["quota"] = True
                    break
        finally:
            raw.close()  # after the quota: reads the open shards to their ends, so that their checksums are compared

    def cycle(self, slot: int, slots: int, rng: random.Random, done: dict[str, bool]) -> Iterator[dict[str, Any]]:
        """This slot's share of the split, mixed, over and over: each pass reads the shards in an order all slots
        agree on (so that they split it), interleaves them and shuffles within the pass (so that a sample is not
        repeated in it)."""
        for repeat in itertools.count():
            urls = list(self.urls)
            random.Random(f"{self.seed}:{self.epoch}:{repeat}").shuffle(urls)
            got = 0
            shuffle = wds.shuffle(bufsize=self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=rng)
            # a later pass re-reads shards the first one read to their ends (and checked): it is not drained
            mixed = self.interleave(*assign(urls, slot, slots, self.epoch), rng, done if repeat == 0 else {}, set())
            try:
                for sample in shuffle(mixed):
                    got += 1
                    yield sample
            finally:
                mixed.close()
            if not got:
                raise DataError(f"{self.split}: no readable sample in this process's share of {len(urls)} shard(s)")

    def interleave(
        self, urls: list[str], every: int, offset: int, rng: random.Random, done: dict[str, bool], seen: set[bytes]
    ) -> Iterator[dict[str, Any]]:
        """The samples :meth:`records` yields, but drawn from up to ``POOL`` open shards at once: each sample comes
        from an open shard chosen with probability proportional to its expected samples left (from the manifest),
        so that the open shards run out together and the stream mixes them evenly whatever their order. Closed
        once the epoch's quota is reached (``done["quota"]``), it reads its open shards and those it has not opened
        yet to their ends, unused, for their checksums and counts: by the end of the first epoch every shard of the
        split was read whole, so a manifest whose counts are not the shards' stops the run then."""
        pending = list(enumerate(urls))[::-1]  # popped from the end: in order
        pool: list[Iterator[dict[str, Any]]] = []
        left: list[float] = []  # expected samples left in each open shard
        try:
            while pending or pool:
                while pending and len(pool) < POOL:
                    position, url = pending.pop()
                    pool.append(self.shard_records(url, position, every, offset, seen))
                    left.append(self.lengths[url] * self.fraction / every)
                (i,) = rng.choices(range(len(pool)), weights=[max(1.0, n) for n in left])
                sample = next(pool[i], None)
                if sample is None:  # fewer than expected (a subset, a slot's share): the weights are estimates
                    del pool[i], left[i]
                    continue
                left[i] -= 1
                yield sample
        except GeneratorExit:
            while done.get("quota") and pool:
                for _ in pool.pop():
                    pass
            while done.get("quota") and pending:
                position, url = pending.pop()
                for _ in self.shard_records(url, position, every, offset, seen):
                    pass
            raise
        finally:
            for samples in pool:  # close the open shards now, not when the garbage collector gets to them
                samples.close()

    def records(self, urls: list[str], every: int, offset: int) -> Iterator[dict[str, Any]]:
        """Raw samples of ``urls``, one shard after another (see :meth:`shard_records`)."""
        seen: set[bytes] = set()
        for position, url in enumerate(urls):
            yield from self.shard_records(url, position, every, offset, seen)

    def shard_records(
        self, url: str, position: int, every: int, offset: int, seen: set[bytes] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Raw samples of shard ``url`` in file order, keeping its sample j (counted over the subset, see
        ``fraction``) when ``(j + position) % every == offset``, each checked by :meth:`parse` first (and, against
        ``seen``, the digests of the keys this process read in this pass, for a key that came before).

        The shard is hashed as it streams and its size, sha256 and sample count are compared with the manifest at
        its end. Every problem goes to the ledger, which stops the run by default; when it tolerates them, the
        shard's loss is counted once, at its end: the manifest's samples minus the records that parse (a split
        record, a stray member or a bad name is listed, not counted, so that what was used plus what was lost
        is what the manifest promised). More records that parse than the manifest gives the shard stop the run
        whatever the tolerance: the manifest does not describe the shard, and the epoch's length came from it. When
        slots share the shard, one of them accounts for it."""
        wanted = {schema.IMAGE, schema.LABEL, schema.META, schema.MASK, *self.field_names().values()}
        reports = offset == 0 or not self.ledger.allowed
        check = ShardCheck.of(self.entries[url])
        seen = set() if seen is None else seen
        index, good = position, 0

        def note(error: ShardError) -> None:  # the loss is counted with the shard's
            if reports:
                self.ledger.record(error, samples=1, counted=False)

        try:
            # every field is read, for RecordCheck to check each image header as augment verify does; only those
            # this run decodes are kept
            for key, fields in shards.iter_records(
                url, None, self.limits, on_error=note, check_images=False, check=check, inside=self.inside
            ):
                subset = self.fraction == 1.0 or in_subset(key, self.fraction)
                mine = subset and index % every == offset
                index += subset
                if not (mine or reports):
                    continue
                try:
                    parsed = self.parse(fields, key)
                except DECODE_ERRORS as e:
                    note(ShardError(url, f"{type(e).__name__}: {e}", key=key))
                    continue
                digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
                if digest in seen:
                    note(ShardError(url, f"sample {key!r} appears more than once in split {self.split}", key=key))
                    continue
                seen.add(digest)
                good += 1
                if mine:
                    kept = {name: data for name, data in fields.items() if name in wanted}
                    yield {**kept, "__key__": key, "__url__": url, "__parsed__": parsed}
        except ShardError as e:  # cut short, or read to its end but not what the manifest says
            if reports:
                self.ledger.record(e, samples=max(0, check.num_samples - good), counted=False)
        if reports and good > check.num_samples:
            raise DataError(
                f"{url}: {good} samples read, its manifest entry says {check.num_samples}: the manifest "
                f"does not describe this shard; {verify_hint(self.root)}"
            )
        if reports and good < check.num_samples:
            lost = check.num_samples - good
            self.ledger.record(ShardError(url, f"{lost} of its {check.num_samples} samples unusable"), samples=lost)

    def parse(self, raw: dict[str, bytes], key: str) -> schema.Parsed:
        """What the trainer takes from raw sample ``key`` (``schema.Parsed``: label, group or -1, has_object, pair
        key, donor label or -1, object id or ""), after ``schema.RecordCheck``, the rules of ``augment verify``:
        anything malformed raises ValueError. Cheap: no image is decoded, only image headers are read.

        The pair key is the key of the original image a shifted test record was made from (its json's
        ``shifted.base_key``), else the record's own; the donor label is the class whose background a mixed record
        shows (``shifted.donor_label``); the object id is what the adapter recorded as the object the image shows
        across the dataset's own test variants (``object_id``: IN-9's class folder and foreground stem)."""
        found = self.rules.inspect(key, raw, getattr(raw, "names", None))
        if found.parsed is None:
            raise ValueError("; ".join(found.problems))
        needed = [schema.IMAGE, *((schema.MASK, *self.field_names().values()) if found.parsed.has_object else ())]
        missing = [name for name in needed if name not in raw]
        if missing:
            raise KeyError(f"missing field(s) {', '.join(missing)}")
        return found.parsed

    def decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Decode one sample that :meth:`parse` accepted; an image that does not decode raises (the caller counts
        it as lost)."""
        parsed: schema.Parsed = raw["__parsed__"]
        label, group, has_object = parsed.label, parsed.group, parsed.has_object
        pair_key, donor_label, object_id = parsed.pair_key, parsed.donor_label, parsed.object_id
        image = self.decode_image(raw[schema.IMAGE])
        h, w = image.shape[1:]
        mask = self.decode_image(raw[schema.MASK], "L") if has_object else torch.zeros(1, h, w, dtype=torch.bool)
        views: dict[str, torch.Tensor] = {"image": image, "mask": mask}
        for name, field_name in self.field_names().items():
            views[name] = self.decode_image(raw[field_name]) if has_object else torch.zeros_like(image)
        if any(v.shape[1:] != (h, w) for v in views.values()):
            raise ValueError(f"fields of sizes {sorted({tuple(v.shape[1:]) for v in views.values()})}, expected one")
        if not self.train and min(h, w) < self.crop:  # too small to crop: scale the shorter side up to the crop
            typed = {k: tv_tensors.Mask(v) if k == "mask" else tv_tensors.Image(v) for k, v in views.items()}
            views = {k: v.as_subclass(torch.Tensor) for k, v in v2.Resize(self.crop, antialias=True)(typed).items()}
        view = (
            draw_view(*views["image"].shape[1:], self.crop)
            if self.train
            else centre_view(*views["image"].shape[1:], self.crop)
        )
        views = {k: apply_view(v, view) for k, v in views.items()}
        return {
            "key": raw["__key__"],
            "label": label,
            "group": group,
            "has_object": has_object,
            "pair_key": pair_key,
            "donor_label": donor_label,
            "object_id": object_id,
            "mask": views.pop("mask"),
            "image": views.pop("image"),
            **views,
        }

    def decode_image(self, data: bytes, mode: str = "RGB") -> torch.Tensor:
        """[3, H, W] uint8 (``mode="L"``: a [1, H, W] bool mask); the declared size is checked before decoding.

        TorchCodec's decoders (libjpeg-turbo and libpng, as PIL's: the same pixels) decode straight into a tensor,
        without PIL's per-image Python overhead; a corrupt or truncated image raises ValueError."""
        kind = encode.check_size(data, self.limits.pixels)
        decoder = decode_jpeg if kind == "JPEG" else decode_png
        try:
            # a tensor over the bytes: TorchCodec would wrap them itself, inside a warnings filter that costs more than
            # the wrapping (torch warns, once, that the buffer is read-only: the decoders only read it)
            pixels = decoder(torch.frombuffer(data, dtype=torch.uint8), mode="RGB" if mode == "RGB" else "GRAY")
        except RuntimeError as e:  # TorchCodec's error for a corrupt or truncated image
            raise ValueError(f"corrupt or truncated {kind} ({str(e).splitlines()[-1][:200]})") from None
        return pixels if mode == "RGB" else pixels > 0


def in_subset(key: str, fraction: float) -> bool:
    """Whether sample ``key`` is in the training subset of this size: the same samples for every seed and run, and
    a smaller subset is part of every larger one (Fig. 5's curve compares nested subsets)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


@dataclass(frozen=True)
class View:
    """Where a sample's crop lies in its (zero-padded) views, and whether they are mirrored."""

    top: int
    left: int
    size: int
    pad_h: int = 0  # rows of zeros added at the top and the bottom, when the image is shorter than the crop
    pad_w: int = 0
    flip: bool = False


def draw_view(h: int, w: int, size: int) -> View:
    """The training view of one sample: a random ``size`` crop (zero padding first if the image is smaller, as
    torchvision's RandomCrop(pad_if_needed=True)) and a horizontal flip with probability 1/2. The draws come from
    torch's generator, which ``ShardStream.__iter__`` seeds per (seed, epoch, rank, worker)."""
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    top = int(torch.randint(0, h + 2 * pad_h - size + 1, ()))
    left = int(torch.randint(0, w + 2 * pad_w - size + 1, ()))
    return View(top, left, size, pad_h, pad_w, float(torch.rand(())) < 0.5)


def centre_view(h: int, w: int, size: int) -> View:
    """The evaluation view: the centre ``size`` crop (the image is at least that large), as torchvision's
    CenterCrop places it."""
    return View(int(round((h - size) / 2.0)), int(round((w - size) / 2.0)), size)


def apply_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """The view of a [C, H, W] tensor: the same pixels for the image, its CF/F images and its mask. Plain slicing,
    far cheaper per sample and view than transforms v2 on tv_tensors."""
    if view.pad_h or view.pad_w:
        x = F.pad(x, (view.pad_w, view.pad_w, view.pad_h, view.pad_h))
    x = x[:, view.top : view.top + view.size, view.left : view.left + view.size]
    return x.flip(-1) if view.flip else x


def to_input(image: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]: normalise with mean = std = 0.5 (docs/METHOD.md, Method). In place on the
    new float tensor: a batch's two extra allocations cost 6x the arithmetic."""
    return image.float().div_(127.5).sub_(1.0)


def prepare(batch: dict[str, Any], device: torch.device | str, non_blocking: bool = False) -> dict[str, Any]:
    """A batch as the model takes it, on ``device``: every uint8 image [N, 3, H, W] (the original and its CF/F
    views) normalised by :func:`to_input`, the bool mask [N, 1, H, W] as float, other tensors moved as they are.

    The loader's workers deliver uint8 (a quarter of float32's bytes through the worker queues) and the batch is
    normalised once, here: on the GPU when the model is there. Float inputs pass through unchanged."""
    out: dict[str, Any] = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=non_blocking)
            if value.dtype == torch.uint8 and value.ndim == 4:
                value = to_input(value)
            elif value.dtype == torch.bool and value.ndim == 4:
                value = value.float()
        out[name] = value
    return out


def loader(stream: ShardStream, batch_size: int, workers: int, drop_last: bool) -> DataLoader:
    return DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=False,
    )


def batches(data: DataLoader, ledger: Ledger) -> Iterator[dict[str, Any]]:
    """The batches of ``data``, stopped with the DataError a worker left in ``ledger`` (checked after every batch
    and at the end): the DataLoader is then shut down as after a ``break``, its workers told to exit."""
    iterator = iter(data)
    for batch in iterator:
        if (message := ledger.stopped()) is not None:
            break
        yield batch
    else:
        message = ledger.stopped()
    if message is not None:
        del iterator  # its last reference: the workers are shut down now, not when the error is collected
        raise DataError(message)


def manifest_sha256(root: str | Path) -> str:
    """sha256 of the build's manifest.json (a local folder or a URL): it names the build, since the manifest lists
    every shard's sha256."""
    inside = None if shards.is_url(root) else root
    data = shards.read_bytes(shards.join(str(root), schema.MANIFEST), MAX_MANIFEST_BYTES, inside)
    return hashlib.sha256(data).hexdigest()


def read_manifest(root: str | Path, verify: bool = False) -> dict[str, Any]:
    """The manifest of the build at ``root``, a local folder or a URL; with ``verify``, every shard's checksum
    (and, for a local build, every sample) is checked first."""
    if not shards.is_url(root):
        manifest = schema.read_manifest(Path(root))
    else:
        url = shards.join(root, schema.MANIFEST)
        try:
            data = shards.read_bytes(url, MAX_MANIFEST_BYTES)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{url}: no manifest{shards.because(e)}; expected the URL of an `augment build` folder"
            ) from None
        except shards.io_errors() as e:
            raise ValueError(f"{url}: unreadable ({type(e).__name__}: {e})") from None
        manifest = schema.parse_manifest(data, url)
    check_counts(root, manifest)
    if verify:
        problems = verify_local(root) if not shards.is_url(root) else verify_checksums(root, manifest)
        if problems:
            raise ValueError(f"{root}: {len(problems)} problem(s), first: {problems[0]}")
    return manifest


def check_counts(root: str | Path, manifest: dict[str, Any]) -> None:
    """That each split's ``num_samples``, which sizes its epochs, is the sum of its shards' (each of which is
    compared with the shard's records when it is read): DataError otherwise, a count changed after the build."""
    where = shards.join(str(root), schema.MANIFEST)
    for split, info in manifest["splits"].items():
        listed = sum(s["num_samples"] for s in info["shards"])
        if info["num_samples"] != listed:
            raise DataError(
                f"{where}: splits.{split}.num_samples is {info['num_samples']}, but its shards list "
                f"{listed} samples; the manifest changed after the build: {verify_hint(root)}"
            )


def verify_local(root: str | Path) -> list[str]:
    from augment.contract.verify import verify as run_verify

    return run_verify(Path(root), progress=False)[0]


def verify_checksums(root: str, manifest: dict[str, Any]) -> list[str]:
    """Size and sha256 of every shard of a remote build against its manifest (one streaming read each)."""
    problems = []
    for info in manifest["splits"].values():
        for shard in info["shards"]:
            url, digest, size = shards.join(root, shard["path"]), hashlib.sha256(), 0
            try:
                with shards.open_url(url) as fh:
                    while block := fh.read(1 << 20):
                        digest.update(block)
                        size += len(block)
            except shards.io_errors() as e:
                problems.append(f"{url}: unreadable ({type(e).__name__}: {e})")
                continue
            if size != shard["bytes"] or digest.hexdigest() != shard["sha256"]:
                problems.append(
                    f"{url}: {size} bytes, sha256 {digest.hexdigest()[:12]}...; the manifest says "
                    f"{shard['bytes']} bytes, {shard['sha256'][:12]}... (changed after the build)"
                )
    return problems
