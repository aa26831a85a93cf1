"""`mtrain data get`: the public corpora the recipes read, downloaded into a local folder, each file
checked against its SHA-256; an interrupted download resumes where it stopped (HTTP Range).

A file already there with the right checksum is not downloaded again, so files put there by hand
(on a machine without internet) are simply checked. A `.part` file is a download in progress.
"""

from __future__ import annotations

import os
import shutil
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mtrain.data.sources import file_digest
from mtrain.errors import MtrainError

CHUNK = 1 << 16
TIMEOUT_S = 30


@dataclass(frozen=True)
class Dataset:
    """A corpus as files at one base URL, each with its SHA-256."""

    name: str
    about: str  # what it is and where it comes from, for --help and errors
    base_url: str
    files: dict[str, str]  # file name -> SHA-256 of its bytes


MULTI30K = Dataset(
    name="multi30k",
    about="Multi30K task 1 (Elliott et al., 2016): EN, DE, FR, CS image captions, line-aligned; train 29,000, "
    "val 1,014, test_2016_flickr 1,000 sentences; from the multi30k/dataset repository",
    base_url="https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/",
    files={
        "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
        "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
        "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
        "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
        "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
        "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
        "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
        "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
        "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
        "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
        "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
        "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    },
)
DATASETS = {MULTI30K.name: MULTI30K}


def get_dataset(dataset: Dataset, directory: Path) -> dict[str, int]:
    """Every file of `dataset` in `directory` (made if needed), checked; returns how many were
    downloaded and how many were there already."""
    directory.mkdir(parents=True, exist_ok=True)
    counts = {"downloaded": 0, "present": 0}
    for name, sha256 in dataset.files.items():
        target = directory / name
        if target.is_file() and file_digest(target, digits=64) == sha256:
            counts["present"] += 1
            continue
        download(dataset, name, directory)
        counts["downloaded"] += 1
    return counts


def download(dataset: Dataset, name: str, directory: Path) -> None:
    """One file into `directory`, through `{name}.part` (resumed if there), renamed once its
    checksum is right; a wrong checksum removes the part so that the next run starts afresh."""
    url, part = dataset.base_url + name, directory / f"{name}.part"
    try:
        _fetch_into(url, part)
    except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
        reason = getattr(e, "reason", None) or e
        raise MtrainError(
            f"cannot download {url} ({reason}); run again to resume, or without internet put the {dataset.name} files "
            f"({', '.join(dataset.files)}) into {directory} by hand: they are checked, not downloaded"
        ) from None
    found = file_digest(part, digits=64)
    if found != dataset.files[name]:
        part.unlink()
        raise MtrainError(
            f"{url} does not match its checksum (sha256 {found[:16]}..., expected {dataset.files[name][:16]}...): a "
            f"damaged download or a changed file; run again, or put the file into {directory} by hand"
        )
    os.replace(part, directory / name)


def _fetch_into(url: str, part: Path) -> None:
    """Append what `part` lacks of `url` (all of it when the server ignores the Range header)."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the part is whole (its checksum decides)
            return
        raise
    with response, open(part, "ab" if offset and response.status == 206 else "wb") as out:
        shutil.copyfileobj(response, out, CHUNK)
        if response.length:  # http.client ends a body the server cut short without an error
            raise ConnectionError(f"the connection closed {response.length} bytes before the end")
