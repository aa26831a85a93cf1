"""The on-disk format of prepared data, and reading it back (`mtrain.data.prepare` writes it).

A prepared data directory (by default `{out_dir}/data`):

    manifest.json              fingerprint of config + inputs, counts, special ids, corpora, files
    spm.model                  (or spm.src.model + spm.tgt.model without a joint vocabulary)
    {split}.{lang}.bin         all token ids of a split and side, uint16 when the vocabulary fits
    {split}.{lang}.bin.json    the dtype and token count of that array
    {split}.{lang}.idx.npy     int64 offsets: sentence i is bin[idx[i]:idx[i+1]]
    {split}.{lang}.txt         the raw valid/test text, the references for BLEU
                               (several language pairs: train.src/train.tgt hold them all, and each
                               pair has its valid/test split, valid.en-fr.en, valid.en-fr.fr, ...)
    train.corpus.npy           which training corpus (index into data.train) each pair came from

The manifest records every file's size and CRC-32, so damaged data is noticed and rebuilt.
"""

from __future__ import annotations

import itertools
import json
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from mtrain.data.tokenizer import Tokenizer
from mtrain.errors import MtrainError

FORMAT_VERSION = 3  # 2: the manifest records each file's size and checksum; 3: several training corpora


class IndexedArray:
    """Variable-length integer sequences in one (memory-mapped) array plus offsets."""

    def __init__(self, offsets: np.ndarray, data: np.ndarray):
        self.offsets, self.data = offsets, data

    @classmethod
    def open(cls, prefix: Path) -> "IndexedArray":
        meta = json.loads(Path(f"{prefix}.bin.json").read_text())
        data = (
            np.memmap(f"{prefix}.bin", dtype=meta["dtype"], mode="r") if meta["tokens"] else np.zeros(0, meta["dtype"])
        )
        return cls(np.load(f"{prefix}.idx.npy", mmap_mode="r"), data)

    @classmethod
    def from_sequences(cls, sequences: list[list[int]], dtype: DTypeLike) -> IndexedArray:
        lengths, data = pack(sequences, dtype)
        return cls(np.concatenate([[0], np.cumsum(lengths)]), data)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets).astype(np.int64)

    def replaced(self, rows: np.ndarray, sequences: list[list[int]]) -> IndexedArray:
        """A copy with the sequences at `rows` (ascending) replaced; the others are copied in runs."""
        if len(rows) == 0:
            return self
        lengths = self.lengths.copy()
        lengths[rows] = [len(s) for s in sequences]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        data = np.empty(int(offsets[-1]), self.data.dtype)
        run_starts, run_ends = np.concatenate([[0], rows + 1]), np.concatenate([rows, [len(self)]])
        for start, end in zip(run_starts.tolist(), run_ends.tolist()):
            if start < end:
                data[offsets[start] : offsets[end]] = self.data[self.offsets[start] : self.offsets[end]]
        for row, sequence in zip(rows.tolist(), sequences):
            data[offsets[row] : offsets[row + 1]] = sequence
        return IndexedArray(offsets, data)


@dataclass
class Split:
    src: IndexedArray
    tgt: IndexedArray
    corpus: np.ndarray | None = None  # training data: the corpus of each pair
    align: IndexedArray | None = None  # training data with data.alignments: each pair's links (flat positions)

    def __len__(self) -> int:
        return len(self.src)


class PreparedData:
    """A prepared data directory, opened read-only."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.manifest = read_manifest(self.dir)
        if self.manifest is None:
            raise MtrainError(
                f"no prepared data in {self.dir} (or its manifest.json is damaged); run mtrain prepare --config ... "
                "(or mtrain train) to build it"
            )
        damaged = damaged_files(self.dir, self.manifest, checksums=False)
        if damaged:
            raise MtrainError(
                f"prepared data in {self.dir} is damaged ({damaged}); run mtrain prepare --config ... (or mtrain "
                "train) to rebuild it"
            )
        self.src_lang, self.tgt_lang = self.manifest["src_lang"], self.manifest["tgt_lang"]

    def tokenizer(self) -> Tokenizer:
        models = self.manifest["spm_models"]
        src = (self.dir / models["src"]).read_bytes()
        tgt = (self.dir / models["tgt"]).read_bytes() if models["tgt"] != models["src"] else None
        vocabulary = self.manifest.get("vocabulary")  # an imported model's piece-to-id vocabulary
        return Tokenizer(src, tgt, json.loads((self.dir / vocabulary).read_text("utf-8")) if vocabulary else None)

    def has(self, split: str) -> bool:
        return split in self.manifest["splits"]

    def split(self, name: str) -> Split:
        if not self.has(name):
            raise MtrainError(f"the prepared data has no '{name}' split; set data.{name} in the config")
        corpus, align = self.dir / f"{name}.corpus.npy", self.dir / f"{name}.align"
        src_lang, tgt_lang = self.split_langs(name)
        return Split(
            IndexedArray.open(self.dir / f"{name}.{src_lang}"),
            IndexedArray.open(self.dir / f"{name}.{tgt_lang}"),
            np.load(corpus) if corpus.is_file() else None,
            IndexedArray.open(align) if Path(f"{align}.bin.json").is_file() else None,
        )

    def split_langs(self, name: str) -> tuple[str, str]:
        """The language names of a split's files: the data's, or the split's own (several language pairs)."""
        src_lang, tgt_lang = self.manifest["splits"][name].get("langs", (self.src_lang, self.tgt_lang))
        return src_lang, tgt_lang

    @property
    def multilingual(self) -> bool:
        """Whether the data has sources led by target-language tokens (more than one target language)."""
        return len({tgt for _, tgt in self.manifest.get("directions", [])}) > 1

    def asked_language(self, split: str) -> str:
        """What a translator of this data is told to translate a split into (decode.tgt_lang): its
        target language when the sources carry language tokens, else nothing."""
        return self.split_langs(split)[1] if self.multilingual else ""

    def reference_splits(self, section: str) -> list[str]:
        """The splits of a valid/test section: the section itself, or one per language pair (valid.en-fr)."""
        return [name for name in self.manifest["splits"] if name.partition(".")[0] == section]

    @property
    def corpora(self) -> list[dict]:
        """The training corpora: name, pairs, tag and tag_id, in data.train's order."""
        return self.manifest["corpora"]

    def raw_text(self, split: str, lang: str) -> list[str]:
        return (self.dir / f"{split}.{lang}.txt").read_text(encoding="utf-8").split("\n")[:-1]


def read_manifest(directory: Path) -> dict | None:
    """The manifest of a prepared data directory; None when absent or not a manifest (damaged)."""
    try:
        manifest = json.loads((Path(directory) / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("splits"), dict) else None


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def file_records(directory: Path) -> dict:
    """{file name: {size, crc32}} of every file of a prepared data directory but the manifest."""
    return {
        p.name: {"size": p.stat().st_size, "crc32": _crc32(p)}
        for p in sorted(Path(directory).iterdir())
        if p.name != "manifest.json"
    }


def damaged_files(directory: Path, manifest: dict, checksums: bool = True) -> str:
    """A description of the first file that is missing or differs from the manifest ('' when all hold)."""
    for name, expected in manifest.get("files", {}).items():  # format 1 manifests list no files
        path = Path(directory) / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {expected['size']}"
        if checksums and _crc32(path) != expected["crc32"]:
            return f"{name} has another checksum than the manifest's"
    return ""


def ids_dtype(vocab_size: int) -> type[np.integer]:
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


def pack(sequences: list[list[int]], dtype: DTypeLike) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of ids as (lengths, all ids concatenated): two arrays, cheap to write or to send."""
    lengths = np.fromiter(map(len, sequences), np.int64, count=len(sequences))
    return lengths, np.fromiter(itertools.chain.from_iterable(sequences), dtype, count=int(lengths.sum()))


class IdsWriter:
    """Appends sequences of ids to {prefix}.bin; `close` writes their offsets to {prefix}.idx.npy."""

    def __init__(self, prefix: Path, vocab_size: int):
        self.prefix, self.total, self.offsets = prefix, 0, [np.zeros(1, np.int64)]
        self.dtype = ids_dtype(vocab_size)
        self.file = open(f"{prefix}.bin", "wb")

    def add(self, sequences: list[list[int]]) -> None:
        self.add_packed(*pack(sequences, self.dtype))

    def add_packed(self, lengths: np.ndarray, flat: np.ndarray) -> None:
        self.file.write(flat.astype(self.dtype, copy=False).tobytes())
        self.offsets.append(self.total + np.cumsum(lengths))
        self.total += int(lengths.sum())

    def close(self) -> int:
        self.file.close()
        np.save(f"{self.prefix}.idx.npy", np.concatenate(self.offsets))
        meta = {"dtype": np.dtype(self.dtype).name, "tokens": self.total}
        Path(f"{self.prefix}.bin.json").write_text(json.dumps(meta))
        return self.total
