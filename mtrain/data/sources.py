"""Read parallel text from plain files, a `datasets` dataset, or the built-in demo generator.

`corpus_chunks` yields a corpus as line-aligned (source, target) lists of at most `size`
pairs, so a corpus larger than memory streams through `prepare`; `read_corpus` returns it
whole (validation and test sets). Problems in the input (missing files, different line
counts, invalid UTF-8, unknown splits or language keys) are reported as one-line
`MtrainError`s that name the file, line or key.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import zlib
from pathlib import Path
from typing import Iterator

from mtrain.config import CorpusConfig
from mtrain.data import demo
from mtrain.errors import MtrainError

LOCAL_LOADERS = ("parquet", "json", "csv", "arrow")
DEFAULT_SPLIT = {"train": "train", "valid": "validation", "test": "test"}
DEMO_SEEDS = {"train": 11, "valid": 12, "test": 13}
DEMO_VARIANT = "de-rev"  # the demo's second target language: German with its words in reverse order


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


def iter_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file (optionally gzip), without line endings, strictly decoded."""
    for chunk in iter_line_chunks(path, 1 << 16):
        yield from chunk


def iter_line_chunks(path: Path, size: int) -> Iterator[list[str]]:
    """The lines of a UTF-8 text file (optionally gzip), `size` at a time, without line endings.

    A chunk is decoded in one call (several times faster than line by line); only when that
    fails are its lines decoded one by one, to name the first bad line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for first_line in itertools.count(1, size):
                raw = list(itertools.islice(f, size))
                if not raw:
                    return
                yield _decode_lines(raw, path, first_line)
    except (OSError, EOFError) as e:
        raise MtrainError(f"cannot read {path}: {e}") from None


def _decode_lines(raw: list[bytes], path: Path, first_line: int) -> list[str]:
    try:
        text = b"".join(raw).decode("utf-8")
    except UnicodeDecodeError:
        for number, line in enumerate(raw, start=first_line):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MtrainError(
                    f"{path}: line {number} is not valid UTF-8 ({e.reason} at byte {e.start}); re-encode the file "
                    "as UTF-8"
                ) from None
        raise
    lines = text.split("\n")  # split at \n only, as reading lines does (not str.splitlines' other breaks)
    if raw[-1].endswith(b"\n"):
        lines.pop()
    return [line.rstrip("\r") for line in lines] if "\r" in text else lines


def read_lines(path: Path) -> list[str]:
    return list(iter_lines(path))


def file_digest(path: Path, digits: int = 16) -> str:
    """The first `digits` hex digits of the file's SHA-256 (64: all of it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:digits]


def input_files(spec: CorpusConfig, src_lang: str, tgt_lang: str) -> list[Path]:
    """The local files a corpus is read from (for the manifest's fingerprint)."""
    if spec.path:
        return [text_file(spec.path, src_lang), text_file(spec.path, tgt_lang)]
    return [Path(f) for f in spec.data_files]


def corpus_chunks(
    spec: CorpusConfig, section: str, src_lang: str, tgt_lang: str, size: int
) -> Iterator[tuple[list[str], list[str]]]:
    """The (source, target) lines of one corpus, `size` pairs at a time."""
    if spec.path:
        yield from _file_chunks(*input_files(spec, src_lang, tgt_lang), size)
    elif spec.dataset:
        yield from _dataset_chunks(spec, section, src_lang, tgt_lang, size)
    else:
        src, tgt = _read_demo(spec.demo, section, src_lang, tgt_lang)
        for start in range(0, len(src), size):
            yield src[start : start + size], tgt[start : start + size]


def read_corpus(spec: CorpusConfig, section: str, src_lang: str, tgt_lang: str) -> tuple[list[str], list[str]]:
    """The (source, target) lines of one corpus, whole."""
    src, tgt = [], []
    for s, t in corpus_chunks(spec, section, src_lang, tgt_lang, size=1 << 20):
        src += s
        tgt += t
    return src, tgt


def _file_chunks(src_path: Path, tgt_path: Path, size: int) -> Iterator[tuple[list[str], list[str]]]:
    chunks = itertools.zip_longest(iter_line_chunks(src_path, size), iter_line_chunks(tgt_path, size))
    for src, tgt in chunks:
        if src is None or tgt is None or len(src) != len(tgt):  # one file ended before the other
            raise MtrainError(
                f"parallel files differ in length: {src_path} has {_count_lines(src_path)} lines but {tgt_path} has "
                f"{_count_lines(tgt_path)}; they must be line-aligned"
            )
        yield src, tgt


def _count_lines(path: Path) -> int:
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        return sum(1 for _ in f)


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
        if lang not in ("en", "de", DEMO_VARIANT):
            raise MtrainError(
                f"the demo corpus is English-German (and {DEMO_VARIANT}, German read backwards, for a second target "
                f"language); data.src_lang/tgt_lang must be en, de or {DEMO_VARIANT}, got '{lang}'"
            )
    held_out = section != "train"
    en, de, alignments, seed = [], [], [], DEMO_SEEDS[section]
    while len(en) < count:
        for e, d, a in zip(*demo.generate_aligned(count, seed)):
            if (zlib.crc32(e.encode()) % 10 == 0) == held_out and len(en) < count:
                en.append(e)
                de.append(d)
                alignments.append(set(a))
        seed += 1000
    side = {"en": en, "de": de, DEMO_VARIANT: [" ".join(reversed(d.split())) for d in de]}
    links = {"en": lambda i, j, n: i, "de": lambda i, j, n: j, DEMO_VARIANT: lambda i, j, n: n - 1 - j}
    words = [len(d.split()) for d in de]
    alignments = [
        {(links[src_lang](i, j, n), links[tgt_lang](i, j, n)) for i, j in a} for a, n in zip(alignments, words)
    ]
    return side[src_lang], side[tgt_lang], alignments


def _dataset_chunks(
    spec: CorpusConfig, section: str, src_lang: str, tgt_lang: str, size: int
) -> Iterator[tuple[list[str], list[str]]]:
    """A `datasets` split in slices; the table itself is memory-mapped Arrow, never all in Python."""
    table, split = _load_split(spec, section, src_lang, tgt_lang)
    columns = table.column_names
    if "translation" in columns:
        first = table[0]["translation"] if len(table) else {}
        missing = [lang for lang in (src_lang, tgt_lang) if lang not in first]
        if missing:
            raise MtrainError(
                f"dataset '{spec.dataset}' split '{split}' has no language '{missing[0]}' in its translation column; "
                f"it has: {', '.join(first)} (check data.src_lang/tgt_lang)"
            )
        rows = lambda part: ([p[src_lang] for p in part["translation"]], [p[tgt_lang] for p in part["translation"]])  # noqa: E731
    elif src_lang in columns and tgt_lang in columns:
        rows = lambda part: (part[src_lang], part[tgt_lang])  # noqa: E731
    else:
        raise MtrainError(
            f"dataset '{spec.dataset}' split '{split}' has neither a 'translation' column nor columns '{src_lang}' "
            f"and '{tgt_lang}'; its columns: {', '.join(columns)}"
        )
    for start in range(0, len(table), size):
        src, tgt = rows(table[start : start + size])
        src, tgt = ["" if s is None else s for s in src], ["" if t is None else t for t in tgt]
        for lang, lines in ((src_lang, src), (tgt_lang, tgt)):
            _require_text(lines, f"dataset '{spec.dataset}' split '{split}' language '{lang}'", start)
        yield src, tgt


def _load_split(spec: CorpusConfig, section: str, src_lang: str, tgt_lang: str):
    """The configured split of a `datasets` dataset (hub name or local loader) and its name; the
    configuration name may hold {src_lang} and {tgt_lang} (one validation corpus for many pairs)."""
    import datasets  # a dependency of mtrain itself, imported lazily: only this source needs it

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
        name = spec.name.replace("{src_lang}", src_lang).replace("{tgt_lang}", tgt_lang)
        splits = datasets.load_dataset(spec.dataset, name or None, data_files=spec.data_files or None)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MtrainError(f"cannot load dataset '{spec.dataset}' ({spec.name or 'no config'}): {first}") from None
    if split not in splits:
        raise MtrainError(
            f"dataset '{spec.dataset}' has no split '{split}'; it has: {', '.join(splits)} (set data.{section}.split)"
        )
    return splits[split], split


def _require_text(values: list, where: str, first_row: int = 0) -> None:
    """Refuse a column of numbers (or lists, ...) where sentences are expected."""
    for row, value in enumerate(values, start=first_row):
        if not isinstance(value, str):
            raise MtrainError(
                f"{where}: row {row} holds {type(value).__name__} {value!r:.40}, not text; point the config at a "
                "column of sentences"
            )
