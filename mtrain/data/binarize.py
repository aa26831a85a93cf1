"""`mtrain prepare`: read -> clean -> sentencepiece -> token ids on disk, once.

The output is a directory (by default `{out_dir}/data`):

    manifest.json              fingerprint of config + inputs, counts, special ids
    spm.model                  (or spm.src.model + spm.tgt.model without a joint vocabulary)
    {split}.{lang}.bin         all token ids of a split and side, uint16 when the vocabulary fits
    {split}.{lang}.bin.json    the dtype and token count of that array
    {split}.{lang}.idx.npy     int64 offsets: sentence i is bin[idx[i]:idx[i+1]]
    {split}.{lang}.txt         the raw valid/test text, the references for BLEU

It is built in a sibling temporary directory and swapped in only when complete, so an
interrupted run never leaves data that a later run would trust. Running again with the same
config and inputs finds the fingerprint unchanged and does nothing.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from mtrain.config import Config
from mtrain.data.clean import clean_pairs
from mtrain.data.sources import file_digest, input_files, read_corpus
from mtrain.data.tokenizer import Tokenizer, load_model_file, train_model
from mtrain.errors import MtrainError
from mtrain.files import disk_errors
from mtrain.special import BOS, EOS, PAD, UNK

log = logging.getLogger("mtrain")
FORMAT_VERSION = 2  # 2: the manifest records each file's size and checksum
SPLITS = ("train", "valid", "test")
ENCODE_CHUNK = 200_000  # sentences encoded and written at a time (bounds memory)


class IndexedArray:
    """Variable-length integer sequences in one memory-mapped array plus offsets."""

    def __init__(self, prefix: Path):
        self.offsets = np.load(f"{prefix}.idx.npy", mmap_mode="r")
        meta = json.loads(Path(f"{prefix}.bin.json").read_text())
        self.data = (
            np.memmap(f"{prefix}.bin", dtype=meta["dtype"], mode="r") if meta["tokens"] else np.zeros(0, meta["dtype"])
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets).astype(np.int64)


@dataclass
class Split:
    src: IndexedArray
    tgt: IndexedArray

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
        return Tokenizer(src, tgt)

    def has(self, split: str) -> bool:
        return split in self.manifest["splits"]

    def split(self, name: str) -> Split:
        if not self.has(name):
            raise MtrainError(f"the prepared data has no '{name}' split; set data.{name} in the config")
        return Split(
            IndexedArray(self.dir / f"{name}.{self.src_lang}"), IndexedArray(self.dir / f"{name}.{self.tgt_lang}")
        )

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


def _write_ids(ids_chunks, prefix: Path, vocab_size: int) -> int:
    """Write sequences of ids to {prefix}.bin and their offsets to {prefix}.idx.npy."""
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    offsets = [np.zeros(1, np.int64)]
    total = 0
    with open(f"{prefix}.bin", "wb") as f:
        for ids in ids_chunks:
            lengths = np.fromiter(map(len, ids), np.int64, count=len(ids))
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype, count=int(lengths.sum()))
            f.write(flat.tobytes())
            offsets.append(total + np.cumsum(lengths))
            total += int(lengths.sum())
    np.save(f"{prefix}.idx.npy", np.concatenate(offsets))
    Path(f"{prefix}.bin.json").write_text(json.dumps({"dtype": np.dtype(dtype).name, "tokens": total}))
    return total


def _encode_side(lines: list[str], encode, prefix: Path, vocab_size: int) -> int:
    chunks = (encode(lines[i : i + ENCODE_CHUNK]) for i in range(0, len(lines), ENCODE_CHUNK))
    return _write_ids(chunks, prefix, vocab_size)


def fingerprint(config: Config) -> dict:
    """What prepared data depends on: the data/tokenizer config and the input files' contents."""
    d = config.data
    files = []
    for section in SPLITS:
        spec = getattr(d, section)
        if spec.is_set():
            files += input_files(spec, d.src_lang, d.tgt_lang)
    for model in (config.tokenizer.model, config.tokenizer.tgt_model):
        if model and Path(model).is_file():
            files.append(Path(model))
    inputs = [{"path": str(p), "size": p.stat().st_size, "sha256": file_digest(p)} for p in files if p.is_file()]
    return {"version": FORMAT_VERSION, "config": config.section_hash("data", "tokenizer"), "inputs": inputs}


def _tokenizer_models(config: Config, src: list[str], tgt: list[str]) -> dict[str, bytes]:
    """The sentencepiece model bytes by file name: given in the config, or trained here."""
    t, seed = config.tokenizer, config.train.seed
    if t.joint:
        model = load_model_file(t.model) if t.model else train_model(itertools.chain(src, tgt), t, seed)
        return {"spm.model": model}
    src_model = load_model_file(t.model) if t.model else train_model(src, t, seed)
    tgt_model = load_model_file(t.tgt_model) if t.tgt_model else train_model(tgt, t, seed)
    return {"spm.src.model": src_model, "spm.tgt.model": tgt_model}


def prepare(config: Config, expected_spm: dict | None = None) -> PreparedData:
    """Build the prepared data directory unless an identical, intact one already exists.

    `expected_spm` ({"src": bytes, "tgt": bytes | None}, a resumed checkpoint's) makes a rebuild
    that would give another vocabulary fail before anything in the run directory changes."""
    target = config.data_dir
    wanted = fingerprint(config)
    existing = read_manifest(target)
    if existing is not None and existing.get("fingerprint") == wanted:
        damaged = damaged_files(target, existing)
        if not damaged:
            log.info("prepared data in %s is up to date (same config and inputs); nothing to do", target)
            data = PreparedData(target)
            _check_vocabulary(data.tokenizer(), expected_spm, target)
            return data
        log.warning("prepared data in %s is damaged (%s); rebuilding", target, damaged)
    elif (target / "manifest.json").exists():
        log.info("config or inputs changed since %s was prepared (or its manifest is damaged); rebuilding", target)

    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        with disk_errors(f"preparing data in {target}", "the data prepared before is intact; free space and run again"):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _build(config, tmp, wanted, expected_spm)
            _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("prepared data written to %s", target)
    return PreparedData(target)


def _check_vocabulary(tokenizer: Tokenizer, expected_spm: dict | None, target: Path) -> None:
    if expected_spm is not None and (tokenizer.src_model, tokenizer.tgt_model) != (
        expected_spm["src"],
        expected_spm["tgt"],
    ):
        raise MtrainError(
            f"the data and tokenizer settings give another sentencepiece vocabulary than the checkpoint being resumed; "
            f"{target} and the run directory are left as they were: keep the run's data/tokenizer settings, "
            "or use --restart / a new out_dir"
        )


def _read_training_pairs(config: Config) -> tuple[list[str], list[str], dict]:
    d = config.data
    log.info("reading training data")
    raw_src, raw_tgt = read_corpus(d.train, "train", d.src_lang, d.tgt_lang)
    src, tgt, counts = clean_pairs(raw_src, raw_tgt, d)
    dropped = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("input", "kept") and v)
    log.info("cleaning: %d pairs in, %d kept (dropped: %s)", counts["input"], counts["kept"], dropped or "none")
    if not src:
        raise MtrainError(
            f"the training corpus is empty after cleaning ({counts['input']} pairs read); check data.train and the "
            "cleaning limits data.min_len/max_len/max_len_ratio"
        )
    return src, tgt, counts


def _build(config: Config, tmp: Path, wanted: dict, expected_spm: dict | None) -> None:
    """Everything of a prepared data directory, written into `tmp`."""
    d = config.data
    src, tgt, counts = _read_training_pairs(config)
    log.info(
        "sentencepiece: %s",
        "loading the given model"
        if config.tokenizer.model
        else f"training a {config.tokenizer.type} model, vocabulary {config.tokenizer.vocab_size}",
    )
    models = _tokenizer_models(config, src, tgt)
    names = list(models)
    tokenizer = Tokenizer(models[names[0]], models[names[-1]] if len(names) > 1 else None)
    _check_vocabulary(tokenizer, expected_spm, config.data_dir)
    for name, data in models.items():
        (tmp / name).write_bytes(data)
    splits = {}
    for section in SPLITS:
        spec = getattr(d, section)
        if not spec.is_set():
            continue
        if section != "train":
            src, tgt = _read_reference_split(spec, section, d, tmp)
        log.info("encoding %s: %d pairs", section, len(src))
        splits[section] = {
            "pairs": len(src),
            "src_tokens": _encode_side(
                src, tokenizer.encode_src, tmp / f"{section}.{d.src_lang}", tokenizer.src_vocab_size
            ),
            "tgt_tokens": _encode_side(
                tgt, tokenizer.encode_tgt, tmp / f"{section}.{d.tgt_lang}", tokenizer.tgt_vocab_size
            ),
        }
    manifest = {
        "fingerprint": wanted,
        "src_lang": d.src_lang,
        "tgt_lang": d.tgt_lang,
        "spm_models": {"src": names[0], "tgt": names[-1]},
        "vocab_size": {"src": tokenizer.src_vocab_size, "tgt": tokenizer.tgt_vocab_size},
        "special_ids": {"pad": PAD, "unk": UNK, "bos": BOS, "eos": EOS},
        "clean": counts,
        "splits": splits,
        "files": file_records(tmp),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _read_reference_split(spec, section: str, d, tmp: Path) -> tuple[list[str], list[str]]:
    """A valid/test split: whitespace-normalized, and kept as text (the references for BLEU)."""
    src, tgt = read_corpus(spec, section, d.src_lang, d.tgt_lang)
    src, tgt = [" ".join(s.split()) for s in src], [" ".join(t.split()) for t in tgt]
    if not src:
        raise MtrainError(f"the {section} corpus is empty; check data.{section}")
    for lang, lines in ((d.src_lang, src), (d.tgt_lang, tgt)):
        (tmp / f"{section}.{lang}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return src, tgt


def _swap_in(new: Path, target: Path) -> None:
    """Replace `target` by the complete directory `new` (each rename is atomic)."""
    old = target.with_name(f"{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
