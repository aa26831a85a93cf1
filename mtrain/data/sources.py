"""Read parallel text from plain files, a `datasets` dataset, or the built-in demo generator.

Every reader returns two line-aligned lists of Python strings (source, target). Problems in
the input (missing files, different line counts, invalid UTF-8, unknown splits or language
keys) are reported as one-line `MtrainError`s that name the file, line or key.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

from mtrain import demo
from mtrain.config import CorpusConfig
from mtrain.errors import MtrainError

LOCAL_LOADERS = ("parquet", "json", "csv", "arrow")
DEFAULT_SPLIT = {"train": "train", "valid": "validation", "test": "test"}
DEMO_SEEDS = {"train": 11, "valid": 12, "test": 13}


def text_file(prefix: str, lang: str) -> Path:
    """`{prefix}.{lang}`, or `{prefix}.{lang}.gz` when only that exists."""
    plain = Path(f"{prefix}.{lang}")
    for candidate in (plain, Path(f"{plain}.gz")):
        if candidate.is_file():
            return candidate
    where = (
        "" if plain.is_absolute() else f" in {Path.cwd()} (relative paths are read from the directory mtrain runs in)"
    )
    raise MtrainError(f"data file not found: {plain} (nor {plain}.gz){where}; check the path prefix in the config")


def read_lines(path: Path) -> list[str]:
    """All lines of a UTF-8 text file (optionally gzip), without line endings, strictly decoded."""
    opener = gzip.open if path.suffix == ".gz" else open
    lines = []
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    lines.append(raw.decode("utf-8").rstrip("\r\n"))
                except UnicodeDecodeError as e:
                    raise MtrainError(
                        f"{path}: line {number} is not valid UTF-8 ({e.reason} at byte {e.start}); re-encode the file "
                        "as UTF-8"
                    ) from None
    except (OSError, EOFError) as e:
        raise MtrainError(f"cannot read {path}: {e}") from None
    return lines


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def input_files(spec: CorpusConfig, src_lang: str, tgt_lang: str) -> list[Path]:
    """The local files a corpus is read from (for the manifest's fingerprint)."""
    if spec.path:
        return [text_file(spec.path, src_lang), text_file(spec.path, tgt_lang)]
    return [Path(f) for f in spec.data_files]


def read_corpus(spec: CorpusConfig, section: str, src_lang: str, tgt_lang: str) -> tuple[list[str], list[str]]:
    """The (source, target) lines of one configured split ('train', 'valid' or 'test')."""
    if spec.path:
        src_path, tgt_path = input_files(spec, src_lang, tgt_lang)
        src, tgt = read_lines(src_path), read_lines(tgt_path)
        if len(src) != len(tgt):
            raise MtrainError(
                f"parallel files differ in length: {src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
                "they must be line-aligned"
            )
        return src, tgt
    if spec.dataset:
        return _read_dataset(spec, section, src_lang, tgt_lang)
    return _read_demo(spec.demo, section, src_lang, tgt_lang)


def _read_demo(count: int, section: str, src_lang: str, tgt_lang: str) -> tuple[list[str], list[str]]:
    src, tgt, _ = demo_split(count, section, src_lang, tgt_lang)
    return src, tgt


def demo_split(
    count: int, section: str, src_lang: str, tgt_lang: str
) -> tuple[list[str], list[str], list[set[tuple[int, int]]]]:
    """Demo pairs of one split with their gold word alignments ((source word, target word) pairs).
    A sentence is held out (valid/test) or trainable by a hash of its English side, so the
    held-out sets never contain a training sentence."""
    for lang in (src_lang, tgt_lang):
        if lang not in ("en", "de"):
            raise MtrainError(
                f"the demo corpus is English-German; data.src_lang/tgt_lang must be en or de, got '{lang}'"
            )
    held_out = section != "train"
    en, de, alignments, seed = [], [], [], DEMO_SEEDS[section]
    while len(en) < count:
        for e, d, a in zip(*demo.generate_aligned(count, seed)):
            if (zlib.crc32(e.encode()) % 10 == 0) == held_out and len(en) < count:
                en.append(e)
                de.append(d)
                alignments.append(set(a) if src_lang == "en" else {(j, i) for i, j in a})
        seed += 1000
    side = {"en": en, "de": de}
    return side[src_lang], side[tgt_lang], alignments


def _read_dataset(spec: CorpusConfig, section: str, src_lang: str, tgt_lang: str) -> tuple[list[str], list[str]]:
    try:
        import datasets  # imported lazily: only this source needs it
    except ImportError:
        raise MtrainError("data source 'dataset' needs the datasets package: pip install datasets") from None
    local = spec.dataset in LOCAL_LOADERS
    if local:
        if not spec.data_files:
            raise MtrainError(
                f"data.{section}.dataset: {spec.dataset} needs data.{section}.data_files (the local files to load)"
            )
        for f in spec.data_files:
            if not Path(f).is_file():
                raise MtrainError(f"data file not found: {f} (data.{section}.data_files)")
    split = spec.split or ("train" if local else DEFAULT_SPLIT[section])
    datasets.logging.set_verbosity_error()
    try:
        splits = datasets.load_dataset(spec.dataset, spec.name or None, data_files=spec.data_files or None)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MtrainError(f"cannot load dataset '{spec.dataset}' ({spec.name or 'no config'}): {first}") from None
    if split not in splits:
        raise MtrainError(
            f"dataset '{spec.dataset}' has no split '{split}'; it has: {', '.join(splits)} (set data.{section}.split)"
        )
    table = splits[split]
    columns = table.column_names
    if "translation" in columns:
        pairs = table["translation"]
        first = pairs[0] if len(pairs) else {}
        missing = [lang for lang in (src_lang, tgt_lang) if lang not in first]
        if missing:
            raise MtrainError(
                f"dataset '{spec.dataset}' split '{split}' has no language '{missing[0]}' in its translation column; "
                f"it has: {', '.join(first)} (check data.src_lang/tgt_lang)"
            )
        src = ["" if p[src_lang] is None else p[src_lang] for p in pairs]
        tgt = ["" if p[tgt_lang] is None else p[tgt_lang] for p in pairs]
    elif src_lang in columns and tgt_lang in columns:
        src = ["" if s is None else s for s in table[src_lang]]
        tgt = ["" if t is None else t for t in table[tgt_lang]]
    else:
        raise MtrainError(
            f"dataset '{spec.dataset}' split '{split}' has neither a 'translation' column nor columns '{src_lang}' "
            f"and '{tgt_lang}'; its columns: {', '.join(columns)}"
        )
    for lang, lines in ((src_lang, src), (tgt_lang, tgt)):
        _require_text(lines, f"dataset '{spec.dataset}' split '{split}' language '{lang}'")
    return src, tgt


def _require_text(values: list, where: str) -> None:
    """Refuse a column of numbers (or lists, ...) where sentences are expected."""
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise MtrainError(
                f"{where}: row {row} holds {type(value).__name__} {value!r:.40}, not text; point the config at a "
                "column of sentences"
            )
