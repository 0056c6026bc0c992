"""Weights downloads (pooch) against a small HTTP server on 127.0.0.1 and file:// URLs: nothing leaves the machine.

Checked: progress, SHA-256 verification, cancellation mid-way, retries after a dropped connection, the messages of
a failed download, and that no partial file is ever left under the registry's name (or in the staging folder).
"""
from __future__ import annotations

import dataclasses
import hashlib
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from napari_clipsam.errors import Cancelled, DownloadError, WeightsUnavailableError
from napari_clipsam.weights import download
from napari_clipsam.weights.download import fetch, verify
from napari_clipsam.weights.registry import SAM_CHECKPOINTS, WeightsFile

PAYLOAD = bytes(range(256)) * (3 << 12)  # 3 MiB
MIB = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    """``/ok/<name>`` serves the payload; ``/<fault>/<name>`` sends 1 MiB of it and then fails: ``drop`` closes the
    connection (fewer bytes than announced), ``reset`` resets it, ``stall`` stops sending; ``flaky`` drops on the
    first request and serves the whole file on the next."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        fault = self.path.split("/")[1]
        self.server.requests.append(self.path)
        if fault == "flaky":
            fault = "drop" if self.server.requests.count(self.path) == 1 else "ok"
        if fault == "missing":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if fault == "ok":
            self.wfile.write(PAYLOAD)
            return
        self.wfile.write(PAYLOAD[:MIB])
        self.wfile.flush()
        if fault == "stall":
            time.sleep(2.0)
        elif fault == "reset":  # RST instead of FIN, once the client has read what was sent
            time.sleep(0.3)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _spec(server, fault: str, sha: str | None = None) -> WeightsFile:
    url = f"http://127.0.0.1:{server.server_address[1]}/{fault}/sam_tiny.pth"
    return WeightsFile("SAM tiny", "sam_tiny.pth", url, sha or hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))


def _left(folder) -> list[str]:
    """What is in the cache folder besides the per-file download lock (filelock leaves it)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".lock") if folder.exists() else []


def test_http_download_verifies_and_reports_progress(server, tmp_path):
    seen = []
    path = fetch(_spec(server, "ok"), tmp_path / "cache", progress=lambda stage, f: seen.append((stage, f)))
    assert path == tmp_path / "cache" / "sam_tiny.pth" and path.read_bytes() == PAYLOAD
    assert len(seen) >= 3 and seen[-1] == ("downloading sam_tiny.pth", 1.0)
    assert [f for _, f in seen] == sorted(f for _, f in seen)
    assert _left(tmp_path / "cache") == ["sam_tiny.pth"]
    # a second fetch finds it in place: no request
    before = len(server.requests)
    assert fetch(_spec(server, "ok"), tmp_path / "cache") == path and len(server.requests) == before


def test_file_url_download_verifies_reports_progress_and_is_atomic(tmp_path):
    source = tmp_path / "mirror" / "sam_tiny.pth"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    spec = WeightsFile("SAM tiny", "sam_tiny.pth", source.as_uri(), hashlib.sha256(PAYLOAD).hexdigest(), 0)
    seen = []
    path = fetch(spec, tmp_path / "cache", progress=lambda s, f: seen.append(f))
    assert path.read_bytes() == PAYLOAD and seen[-1] == 1.0 and len(seen) >= 3
    assert _left(tmp_path / "cache") == ["sam_tiny.pth"]


def test_checksum_mismatch_raises_and_leaves_nothing(server, tmp_path):
    spec = _spec(server, "ok", sha="0" * 64)
    with pytest.raises(WeightsUnavailableError) as info:
        fetch(spec, tmp_path / "cache")
    msg = str(info.value)
    assert "SHA-256" in msg and "discarded" in msg and spec.url in msg
    assert str(tmp_path / "cache" / "sam_tiny.pth") in msg
    assert hashlib.sha256(PAYLOAD).hexdigest() in msg  # what was received, from pooch's check
    assert _left(tmp_path / "cache") == []
    # an existing file with the wrong checksum is refused, never replaced
    (tmp_path / "cache" / "sam_tiny.pth").write_bytes(b"other")
    with pytest.raises(WeightsUnavailableError, match="expected 0000"):
        verify(tmp_path / "cache" / "sam_tiny.pth", spec)
    with pytest.raises(WeightsUnavailableError, match="Delete it and download again"):
        fetch(spec, tmp_path / "cache")
    assert (tmp_path / "cache" / "sam_tiny.pth").read_bytes() == b"other"


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_cancel_mid_download_leaves_no_partial_file(server, tmp_path, scheme):
    spec = _spec(server, "ok")
    if scheme == "file":
        source = tmp_path / "sam_tiny.pth"
        source.write_bytes(PAYLOAD)
        spec = dataclasses.replace(spec, url=source.as_uri())
    seen = []
    with pytest.raises(Cancelled):
        fetch(spec, tmp_path / "cache", progress=lambda s, f: seen.append(f), cancelled=lambda: len(seen) >= 1)
    assert seen == [pytest.approx(1 / 3)]  # one chunk arrived, then it stopped
    assert _left(tmp_path / "cache") == []


def test_a_dropped_connection_is_retried(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RETRIES", 1)
    spec = _spec(server, "flaky")
    assert fetch(spec, tmp_path / "cache").read_bytes() == PAYLOAD
    assert server.requests.count("/flaky/sam_tiny.pth") == 2
    assert _left(tmp_path / "cache") == ["sam_tiny.pth"]


@pytest.mark.parametrize("fault", ["drop", "reset", "stall"])
def test_dropped_download_names_the_url_and_what_to_do(server, tmp_path, monkeypatch, fault):
    monkeypatch.setattr(download, "TIMEOUT", 0.5)
    spec = _spec(server, fault)
    with pytest.raises(DownloadError) as info:
        fetch(spec, tmp_path)
    msg = str(info.value)
    assert spec.url in msg and f"failed after {MIB} of {len(PAYLOAD)} bytes" in msg and "run again" in msg
    assert spec.sha256 in msg and str(tmp_path / "sam_tiny.pth") in msg
    assert _left(tmp_path) == []  # the partial file is gone


def test_unreachable_or_missing_file_says_how_to_place_it(server, tmp_path):
    for spec in (dataclasses.replace(SAM_CHECKPOINTS["vit_b"], url="http://127.0.0.1:9/sam_vit_b_01ec64.pth"),
                 dataclasses.replace(_spec(server, "missing"), filename="sam_vit_b_01ec64.pth")):
        with pytest.raises(DownloadError) as info:
            fetch(spec, tmp_path / "sam")
        msg = str(info.value)
        assert "Could not download" in msg and spec.url in msg and spec.sha256 in msg
        assert str(tmp_path / "sam" / spec.filename) in msg
        assert _left(tmp_path / "sam") == []


def test_a_killed_downloads_leftovers_are_removed_by_the_next_download(server, tmp_path):
    cache = tmp_path / "cache"
    staging = cache / ".sam_tiny.pth.part"  # what a download killed with SIGKILL leaves (pooch's temporary file)
    staging.mkdir(parents=True)
    (staging / "tmpk1ll3d").write_bytes(PAYLOAD[:500])
    older = cache / ".sam_tiny.pth.abc123.part"  # what earlier versions left
    older.write_bytes(PAYLOAD[:500])
    other = cache / ".other.pth.part"  # another file's download: not ours to touch
    other.mkdir()
    assert fetch(_spec(server, "ok"), cache).read_bytes() == PAYLOAD
    assert _left(cache) == [".other.pth.part", "sam_tiny.pth"]
