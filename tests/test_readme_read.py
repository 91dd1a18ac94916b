"""The README's "read the shards" snippets, run as shown against a shard holding a planted pickle.

webdataset's default decoders unpickle ``.pyd``/``.pickle`` members (``autodecode.basichandlers``), so the snippet
the README used to show, ``wds.WebDataset(...).decode("rgb8")``, ran the code of any ``<key>.pyd`` in a shard from
someone else. These tests read the fenced blocks of README.md's "The shards" section (what a reader copies), run
them against a build with such a member, and check that no code ran and that the images still decode; the old
snippet runs too and must run the planted code, which shows that the check can fail.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from augment.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## The shards"
BUILD_IN_README = "shards/mine"  # the build folder the snippets name; replaced with the test's build
OLD_SNIPPET = """\
import webdataset as wds

for sample in wds.WebDataset("shards/mine/train/shard-000000.tar", shardshuffle=False).decode("rgb8"):
    image, label, cf, meta = sample["jpg"], sample["json"]["label"], sample["cf.tile.jpg"], sample["json"]
"""
# member names a planted pickle may take: the plain extension, webdataset's lower-casing of suffixes, its other
# pickle extension, and a name that starts like a real field
PLANTED = ["pyd", "PYD", "pickle", "mask.pyd"]
IMAGE_SIZE = 32


class Plant:
    """Unpickling it creates the folder ``marker``: proof that a reader ran code from the shard."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def readme_blocks() -> list[str]:
    """The ```python blocks of README.md's "The shards" section, in order."""
    text = README.read_text()
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + len(SECTION) + 2)
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def snippet(needle: str) -> str:
    blocks = [b for b in readme_blocks() if needle in b]
    assert len(blocks) == 1, f"expected one python block with {needle!r} in README.md's {SECTION!r} section"
    return blocks[0]


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("readme") / "shards"
    args = [
        "build",
        "--dataset",
        "synthetic",
        "--size",
        "20",
        "--image-size",
        str(IMAGE_SIZE),
        "--infill",
        "tile",
        "--out",
        str(out),
        "-q",
    ]
    result = CliRunner().invoke(app, args, prog_name="augment")
    assert result.exit_code == 0, result.output
    return out


def planted_copy(build: Path, dest: Path, suffix: str, marker: Path, list_it: bool = False) -> Path:
    """A copy of ``build``'s manifest and first train shard, with ``<first key>.<suffix>`` (a ``Plant`` pickle)
    added to the first record's members; ``list_it``: the manifest lists ``suffix`` as a field of the split too
    (a hostile manifest)."""
    manifest = json.loads((build / "manifest.json").read_text())
    rel = manifest["splits"]["train"]["shards"][0]["path"]
    with tarfile.open(build / rel) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    key = members[0][0].name.partition(".")[0]
    last = max(i for i, (m, _) in enumerate(members) if m.name.partition(".")[0] == key)
    payload = pickle.dumps(Plant(marker))
    info = tarfile.TarInfo(f"{key}.{suffix}")
    info.size = len(payload)
    members.insert(last + 1, (info, payload))
    (dest / rel).parent.mkdir(parents=True)
    with tarfile.open(dest / rel, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
    if list_it:
        manifest["splits"]["train"]["fields"].append(suffix)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def run(code: str, root: Path) -> dict:
    """Run a README snippet with its build folder replaced by ``root``; its variables after the run."""
    assert BUILD_IN_README in code
    namespace: dict = {"__name__": "readme_snippet"}
    exec(compile(code.replace(BUILD_IN_README, str(root)), str(README), "exec"), namespace)
    return namespace


def samples_in(root: Path) -> int:
    return json.loads((root / "manifest.json").read_text())["splits"]["train"]["shards"][0]["num_samples"]


def test_readme_shows_no_default_decode():
    for block in readme_blocks():
        assert not re.search(r"\.decode\((\s*\"[a-z0-9]+\"\s*)?\)", block), block  # default handlers, pickle included
        assert ".decode(" not in block or "post=[]" in block, block


@pytest.mark.parametrize("suffix", PLANTED)
def test_old_snippet_runs_planted_code(build, tmp_path, suffix):
    """The snippet the README showed before runs the planted pickle: the check below can fail."""
    marker = tmp_path / "ran"
    root = planted_copy(build, tmp_path / "build", suffix, marker)
    run(OLD_SNIPPET, root)
    assert marker.exists()


@pytest.mark.parametrize("list_it", [False, True], ids=["manifest-as-built", "manifest-lists-it"])
@pytest.mark.parametrize("suffix", PLANTED)
def test_webdataset_snippet_runs_no_planted_code(build, tmp_path, suffix, list_it):
    """The README's webdataset snippet: no code runs, even when a hostile manifest lists the planted field (then
    only the explicit decoders stand in the way), and every sample decodes to images of the stored size."""
    marker = tmp_path / "ran"
    root = planted_copy(build, tmp_path / "build", suffix, marker, list_it=list_it)
    code = snippet("import webdataset")
    assert "wds.WebDataset(" in code and "post=[]" in code
    namespace = run(code, root)
    assert not marker.exists()
    # the loop's last sample, as the snippet leaves it
    assert namespace["image"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and namespace["image"].dtype.name == "uint8"
    assert namespace["cf"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert isinstance(namespace["label"], int) and namespace["label"] == namespace["meta"]["label"]
    # every sample, read again through the snippet's dataset
    samples = list(namespace["dataset"])
    assert not marker.exists()
    assert len(samples) == samples_in(root)
    for sample in samples:
        assert sample["jpg"].shape == sample["cf.tile.jpg"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        if sample["json"]["has_object"]:
            assert sample["mask.png"].shape == (IMAGE_SIZE, IMAGE_SIZE)
        assert sample["cls"] == sample["json"]["label"]
        planted = [k for k in sample if k.lower().endswith(("pyd", "pickle"))]
        if list_it:  # kept where the manifest lists it, but as bytes
            assert all(isinstance(sample[k], bytes) for k in planted)
        else:
            assert not planted, sorted(sample)


@pytest.mark.parametrize("suffix", PLANTED)
def test_iter_records_snippet_runs_no_planted_code(build, tmp_path, suffix):
    marker = tmp_path / "ran"
    root = planted_copy(build, tmp_path / "build", suffix, marker)
    namespace = run(snippet("iter_records"), root)
    assert not marker.exists()
    assert namespace["image"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert isinstance(namespace["label"], int)
    assert set(namespace["fields"]) == {"jpg", "cls", "json"}
