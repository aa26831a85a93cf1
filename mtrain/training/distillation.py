"""Sequence-level knowledge distillation (Kim and Rush, 2016), what `mtrain distill` runs: from a
teacher (one checkpoint or an ensemble) into a student described by its own config.

The teacher translates the student's training sources with its beam search; the translations
replace the training targets, and the student trains on them (optionally mixed with the original
pairs through the weighted corpus list), then is exported to int8 CTranslate2 for deployment.
Validation and test data are never distilled: the student is validated and tested on the real
references.

The distilled corpus is plain text in the student's run directory, `distilled/train.{lang}`,
line-aligned with the training sources. It is written in chunks, each translated, then renamed
into place whole; an interrupted distillation resumes after the last finished chunk, and a
`distilled/distill.json` records what made them (the teachers' and the sources' SHA-256, the
decode settings, the engine with its quantization and precision), so translations of other
sentences, or by another teacher or engine, are never mixed in or reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mtrain.config import Config, CorpusConfig
from mtrain.data.sources import corpus_chunks, file_digest, read_lines
from mtrain.errors import MtrainError
from mtrain.files import atomic_write_text
from mtrain.inference.engine import TranslationEngine
from mtrain.run import checkpoint
from mtrain.run.directory import RunLock
from mtrain.training.progress import clock

log = logging.getLogger("mtrain")

CHUNK_LINES = 2000  # sentences per chunk: what an interruption can cost at most
DISTILLED = "distilled"


def check_teachers(teachers: list[Path], config: Config) -> dict:
    """The teachers' shared description; refuses a missing file, teachers of another language pair
    than the student's, and a student config whose tokenizer.model is not the teachers' vocabulary."""
    if not teachers:
        raise MtrainError("give the teacher: --teacher CHECKPOINT (repeat it for an ensemble)")
    states = [checkpoint.load(path) for path in teachers]  # a missing or damaged file is a one-line error
    d = config.data
    for path, state in zip(teachers, states):
        data = state["config"]["data"]
        if (data["src_lang"], data["tgt_lang"]) != (d.src_lang, d.tgt_lang):
            raise MtrainError(
                f"teacher {path} translates {data['src_lang']}->{data['tgt_lang']}, the student config "
                f"{d.src_lang}->{d.tgt_lang}; give a teacher of the student's direction"
            )
    if config.tokenizer.model and Path(config.tokenizer.model).is_file():
        if Path(config.tokenizer.model).read_bytes() != states[0]["spm"]["src"]:
            raise MtrainError(
                f"the student config's tokenizer.model {config.tokenizer.model} is not the teacher's vocabulary; "
                "leave it out (the student trains its own) or give the teacher's run's data/spm.model"
            )
    return {"teachers": [{"path": str(p), "sha256": file_digest(Path(p))} for p in teachers]}


def training_sources(config: Config) -> list[str]:
    """The source side of every training corpus of the student's config, in order."""
    d = config.data
    lines: list[str] = []
    for spec in d.train:
        for src, _ in corpus_chunks(spec, "train", d.src_lang, d.tgt_lang, size=1 << 16):
            lines += src
    return lines


def sources_digest(sources: list[str]) -> str:
    """SHA-256 of the source lines (each ended by a newline): other sentences with the same line
    count are other sources."""
    digest = hashlib.sha256()
    for line in sources:
        digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def engine_identity(engine: TranslationEngine) -> dict:
    """What decides the teacher's output besides its weights: engine, quantization, precision, decoding."""
    return {
        "name": engine.info.get("engine", "torch"),
        "quantization": getattr(engine, "quantization", None),
        "precision": getattr(engine, "precision", None),
        "beam": engine.config.beam,
        "lenpen": engine.config.lenpen,
        "max_len_a": engine.config.max_len_a,
        "max_len_b": engine.config.max_len_b,
    }


def distill_corpus(
    engine: TranslationEngine,
    sources: list[str],
    folder: Path,
    identity: dict,
    src_lang: str,
    tgt_lang: str,
    progress: Callable[[int], object] | None = None,
) -> Path:
    """Translate `sources` into `folder`/train.{tgt_lang} (and copy them to train.{src_lang}), a
    chunk at a time, resuming after the chunks an earlier, interrupted call finished. Returns the
    corpus prefix `folder/train`."""
    folder.mkdir(parents=True, exist_ok=True)
    record, done = folder / "distill.json", folder / f"train.{tgt_lang}"
    identity = {
        **identity,
        "sources": {"lines": len(sources), "sha256": sources_digest(sources)},
        "chunk_lines": CHUNK_LINES,
    }
    if record.is_file() and _read_record(record) != identity:
        raise MtrainError(
            f"{folder} holds a distillation of other sources, or by other teachers, engine or settings ({record}); "
            f"delete {folder} to distill again"
        )
    atomic_write_text(record, json.dumps(identity, indent=2) + "\n")
    if done.is_file():
        log.info("distilled corpus found complete: %s", done)
        return folder / "train"
    chunks = folder / "chunks"
    for number, start in enumerate(range(0, len(sources), CHUNK_LINES)):
        path = chunks / f"{number:06d}.{tgt_lang}"
        lines = sources[start : start + CHUNK_LINES]
        if not path.is_file():
            atomic_write_text(path, "".join(line + "\n" for line in engine.translate(lines)))
        if progress is not None:
            progress(len(lines))
    _join(chunks, folder, sources, src_lang, tgt_lang)
    return folder / "train"


def _read_record(record: Path) -> object:
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):  # damaged: not the record of this distillation
        return None


def _join(chunks: Path, folder: Path, sources: list[str], src_lang: str, tgt_lang: str) -> None:
    """The finished chunks become train.{tgt_lang} (written last: its presence means complete)."""
    targets = [line for path in sorted(chunks.glob(f"*.{tgt_lang}")) for line in read_lines(path)]
    if len(targets) != len(sources):
        raise MtrainError(f"{chunks} holds {len(targets)} translations for {len(sources)} sources; delete {folder}")
    atomic_write_text(folder / f"train.{src_lang}", "".join(line + "\n" for line in sources))
    atomic_write_text(folder / f"train.{tgt_lang}", "".join(line + "\n" for line in targets))
    shutil.rmtree(chunks)


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[int], object]]:
    """A progress bar on a terminal, and a log line with the ETA after every chunk."""
    from tqdm import tqdm

    start, done = time.monotonic(), 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        bar.update(count)
        seconds = time.monotonic() - start
        eta = seconds / done * (total - done) if done else 0.0
        log.info("distilled %d/%d sentences | %s elapsed | ETA %s", done, total, clock(seconds), clock(eta))

    with tqdm(total=total, unit="sent", desc="distilling", disable=None, file=sys.stderr) as bar:
        yield advance


def student_config(config: Config, corpus: Path, original_weight: float) -> Config:
    """The student's config with the distilled corpus as training data; with `original_weight` > 0
    the original corpora stay too, each weighted by it (the distilled corpus has weight 1)."""
    distilled = CorpusConfig(path=str(corpus))
    originals = [dataclasses.replace(c, weight=c.weight * original_weight) for c in config.data.train]
    train = [distilled, *(originals if original_weight > 0 else [])]
    return dataclasses.replace(config, data=dataclasses.replace(config.data, train=train))


def distill_command(
    config: Config,
    teachers: list[Path],
    open_teacher: Callable[[dict], TranslationEngine],
    train: Callable[[Config], dict],
    export: Callable[[Path, Path], Path] | None,
    original_weight: float = 0.0,
) -> dict:
    """Distill, train the student, export it; each step resumes where an earlier run stopped."""
    if not math.isfinite(original_weight) or original_weight < 0:
        raise MtrainError(f"--original-weight must be a number >= 0 (0: distilled data only), got {original_weight}")
    identity = check_teachers(teachers, config)
    engine = open_teacher(identity)
    identity["engine"] = engine_identity(engine)
    sources = training_sources(config)
    folder = Path(config.out_dir) / DISTILLED
    log.info("distilling %d training sources with %d teacher(s) into %s", len(sources), len(teachers), folder)
    with RunLock(Path(config.out_dir)), _progress(len(sources)) as progress:  # not under another run's feet
        corpus = distill_corpus(engine, sources, folder, identity, config.data.src_lang, config.data.tgt_lang, progress)
    result = train(student_config(config, corpus, original_weight))
    if export is not None:
        result["exported"] = str(export(Path(config.out_dir) / "checkpoint_avg.pt", Path(config.out_dir) / "ct2-int8"))
    return result
