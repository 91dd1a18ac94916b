"""Shards from URLs: the trainer reads a build over HTTP (a real server on loopback) or any fsspec URL, with the
same results as from the local folder."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from train.config import Config
from train.data import Fields, ShardStream, read_manifest


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    from augment.config import BuildConfig
    from augment.runner.build import build

    out = tmp_path_factory.mktemp("remote") / "site" / "builds" / "tiny"
    config = BuildConfig(
        dataset="synthetic",
        infill=["tile"],
        factual=["shuffle"],
        image_size=24,
        shard_size=16,
        dataset_options={"size": 40},
    )
    build(out, config, workers=1, progress=False)
    return out


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request on stderr
        pass


@pytest.fixture(scope="module")
def server(build: Path) -> Iterator[str]:
    """A plain static-file HTTP server (no range requests) on a free loopback port, serving the build's parents."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(build.parents[1])))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def config(shards: str, out: Path) -> Config:
    return Config.resolve(
        "demo",
        shards=shards,
        out=str(out),
        workers=2,
        batch_size=8,
        crop=16,
        epochs=1,
        cf=["tile"],
        f=["shuffle"],
        max_saliency_images=8,
    )


def test_fit_and_eval_from_http_equal_the_local_folder(build: Path, server: str, tmp_path: Path) -> None:
    from train.cli import app
    from train.train import fit

    url = f"{server}/builds/tiny"
    remote = fit(config(url, tmp_path / "remote"))
    local = fit(config(str(build), tmp_path / "local"))
    assert remote == local and remote["splits"]["val"]["num_samples"] == 8
    a = torch.load(tmp_path / "remote/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "local/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    runner = CliRunner()
    for run, shards in ((tmp_path / "remote", url), (tmp_path / "local", str(build))):
        result = runner.invoke(app, ["eval", str(run), "--shards", shards, "--workers", "0"])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "remote/results.tsv").read_text() == (tmp_path / "local/results.tsv").read_text()


def test_http_errors_name_the_url_and_verify_checks_remote_checksums(build: Path, server: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{server}/builds/nope/manifest.json: no manifest"):
        read_manifest(f"{server}/builds/nope")
    assert read_manifest(f"{server}/builds/tiny", verify=True)["num_samples"] == 80
    copy = build.parent / "changed"
    shutil.copytree(build, copy)
    shard = copy / "val/shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"val/shard-000000.tar: .*changed after the build"):
        read_manifest(f"{server}/builds/changed", verify=True)


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_any_fsspec_url_streams_the_same_samples(build: Path, scheme: str) -> None:
    import fsspec

    if scheme == "memory":
        fs = fsspec.filesystem("memory")
        for path in build.rglob("*"):
            if path.is_file():
                fs.pipe(f"/tiny/{path.relative_to(build)}", path.read_bytes())
        url = "memory://tiny"
    else:
        url = build.as_uri()
    manifest = read_manifest(url)
    assert manifest == read_manifest(build)
    fields = Fields(cf=["tile"], f=["shuffle"])
    remote = list(ShardStream(url, manifest, "train", fields, train=True, crop=16, seed=3, batch_size=8))
    local = list(ShardStream(build, manifest, "train", fields, train=True, crop=16, seed=3, batch_size=8))
    assert [s["key"] for s in remote] == [s["key"] for s in local] and len(remote) == 40
    assert all(torch.equal(r["cf.tile"], s["cf.tile"]) for r, s in zip(remote, local, strict=True))
    if scheme == "memory":
        fs.rm("/tiny", recursive=True)


def test_a_remote_build_s_error_advises_a_check_that_takes_its_url(build: Path, server: str) -> None:
    """`augment verify` reads local folders only: for a URL the trainer advises `train fit --verify` (checksums) or
    verify on a local copy, not `augment verify http://...`."""
    from train.ledger import DataError

    copy = build.parent / "flipped"
    shutil.copytree(build, copy)
    shard = copy / "val/shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    url = f"{server}/builds/flipped"
    with pytest.raises(DataError) as stopped:
        list(ShardStream(url, read_manifest(url), "val", Fields(), train=False, crop=16))
    message = str(stopped.value)
    assert f"{url}/val/shard-000000.tar" in message and "augment verify http" not in message
    assert f"`train fit --shards {url} --verify`" in message and "`augment verify FOLDER`" in message
