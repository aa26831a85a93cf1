"""`mtrain data get`: against a local HTTP server holding small fixture files (no internet in tests):
files checked by SHA-256, an interrupted download resumed with a Range request, a damaged one
refused and started afresh, files put in by hand kept, and no network a one-line way out."""

from __future__ import annotations

import hashlib
import http.server
import random
import threading
from pathlib import Path

import pytest

from mtrain.data import download
from mtrain.data.download import Dataset, get_dataset
from mtrain.errors import MtrainError

from helpers import run_cli

FILES = {  # what a server holds (random bytes: a download cut short stays short)
    f"{split}.{lang}.gz": random.Random(f"{split}{lang}").randbytes(5000) for split in ("train", "val") for lang in "xy"
}


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves FILES, honouring `Range: bytes=N-`; records every request's range; may cut a body short."""

    requests: list[tuple[str, str | None]] = []
    cut_after: int | None = None  # send only this many bytes of a full body, then close

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        name = self.path.rsplit("/", 1)[-1]
        self.requests.append((name, self.headers.get("Range")))
        if name not in FILES:
            self.send_error(404)
            return
        body, start = FILES[name], 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = type(self).cut_after
        self.wfile.write(body[start:] if cut is None or start else body[:cut])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    RangeHandler.requests, RangeHandler.cut_after = [], None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/data/"
    httpd.shutdown()
    httpd.server_close()


def fixture_dataset(base_url: str, **changed: str) -> Dataset:
    files = {name: hashlib.sha256(body).hexdigest() for name, body in FILES.items()}
    return Dataset("fixture", "test files", base_url, {**files, **changed})


def test_files_are_downloaded_checked_and_not_fetched_again(server, tmp_path):
    dataset = fixture_dataset(server)
    assert get_dataset(dataset, tmp_path / "fixture") == {"downloaded": 4, "present": 0}
    assert {p.name: p.read_bytes() for p in (tmp_path / "fixture").iterdir()} == FILES
    RangeHandler.requests.clear()
    assert get_dataset(dataset, tmp_path / "fixture") == {"downloaded": 0, "present": 4}
    assert RangeHandler.requests == []  # files put there (or fetched before) are only checked


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path, monkeypatch):
    dataset = fixture_dataset(server)
    RangeHandler.cut_after = 1000  # the connection drops after 1000 bytes of every whole file
    with pytest.raises(MtrainError, match="cannot download .*train.x.gz .*run again to resume"):
        get_dataset(dataset, tmp_path)
    assert (tmp_path / "train.x.gz.part").stat().st_size == 1000 and not (tmp_path / "train.x.gz").exists()
    RangeHandler.cut_after = None
    RangeHandler.requests.clear()
    get_dataset(dataset, tmp_path)
    assert RangeHandler.requests[0] == ("train.x.gz", "bytes=1000-")  # only the rest was asked for
    assert (tmp_path / "train.x.gz").read_bytes() == FILES["train.x.gz"]
    assert not list(tmp_path.glob("*.part"))


def test_a_wrong_checksum_is_refused_and_the_part_removed(server, tmp_path):
    dataset = fixture_dataset(server, **{"val.y.gz": "0" * 64})
    with pytest.raises(MtrainError, match=r"val.y.gz does not match its checksum \(sha256 [0-9a-f]{16}\.\.\., "):
        get_dataset(dataset, tmp_path)
    assert not (tmp_path / "val.y.gz").exists() and not (tmp_path / "val.y.gz.part").exists()


def test_no_network_says_where_to_put_the_files_by_hand(tmp_path, monkeypatch):
    dataset = fixture_dataset("http://127.0.0.1:9/")  # the discard port: nothing listens
    monkeypatch.setattr(download, "DATASETS", {"fixture": dataset})
    result = run_cli("data", "get", "fixture", "--dir", str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot download http://127.0.0.1:9/train.x.gz" in result.stderr
    assert (
        f"put the fixture files (train.x.gz, train.y.gz, val.x.gz, val.y.gz) into {tmp_path / 'fixture'}"
        in result.stderr
    )
    for name, body in FILES.items():  # put there by hand: checked, nothing fetched
        Path(tmp_path / "fixture" / name).write_bytes(body)
    result = run_cli("data", "get", "fixture", "--dir", str(tmp_path))
    assert (
        result.returncode == 0 and "4 files in" in result.stdout and "(0 downloaded, 4 already there)" in result.stdout
    )
    assert (
        run_cli("data", "get", "nothing").stderr.strip() == "error: no corpus 'nothing'; mtrain data get knows: fixture"
    )
