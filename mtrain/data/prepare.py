"""`mtrain prepare`: read -> clean -> sentencepiece -> token ids on disk, once.

The output is a prepared data directory; its format is described in `mtrain.data.store`.

The training corpora stream through in chunks of CHUNK_PAIRS pairs, so memory does not grow
with their size: pass 1 reads and cleans them into a temporary text file, which sentencepiece
trains on (a seeded sample of it, streamed); pass 2 encodes that text and appends the ids to the
.bin files. In both passes worker processes (one per core) clean or encode chunks while this
process reads and writes (mtrain.data.parallel); the output is the same for any number of
workers.

It is built in a sibling temporary directory and swapped in only when complete, so an
interrupted run never leaves data that a later run would trust. Running again with the same
config and inputs finds the fingerprint unchanged and does nothing.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import multiprocessing
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mtrain.config import Config, CorpusConfig, DataConfig
from mtrain.data.clean import CHUNK_PAIRS, add_counts, cleaned_training_chunks, no_counts
from mtrain.data.filters import check as check_filters
from mtrain.data.filters import enabled
from mtrain.data.multilingual import (
    reference_splits,
    several_pairs,
    source_prefixes,
    target_token,
    train_sides,
)
from mtrain.data.parallel import ordered_map
from mtrain.data.sources import file_digest, input_files, read_corpus
from mtrain.data.spm_training import CLEAN_TEXT, case_shares, needs_training, sample_size, tokenizer_models
from mtrain.data.store import (
    FORMAT_VERSION,
    IdsWriter,
    IndexedArray,
    PreparedData,
    damaged_files,
    file_records,
    ids_dtype,
    pack,
    read_manifest,
)
from mtrain.data.tokenizer import VOCABULARY_FILE, Tokenizer
from mtrain.errors import MtrainError
from mtrain.files import disk_errors, remove_stale_temporaries, temporary_name
from mtrain.special import BOS, EOS, PAD, UNK

log = logging.getLogger("mtrain")


def fingerprint(config: Config, given_spm: dict | None = None) -> dict:
    """What prepared data depends on: the data/tokenizer config (but for the settings only training
    reads, such as corpus weights and augmentation's probabilities: only whether any case change is
    on, which the sentencepiece models cover), the input files' contents and the sentencepiece
    models given by train.init_from's model."""
    d = config.data
    files = []
    for spec in d.train:
        files += input_files(spec, *d.direction(spec))
    for spec, (src_lang, tgt_lang) in itertools.product((d.valid, d.test), d.directions()):
        if spec.is_set():
            files += input_files(spec, src_lang, tgt_lang)
    for model in (config.tokenizer.model, config.tokenizer.tgt_model):
        if model and Path(model).is_file():
            files.append(Path(model))
    inputs = [{"path": str(p), "size": p.stat().st_size, "sha256": file_digest(p)} for p in files if p.is_file()]
    settings = {"data": asdict(d), "tokenizer": asdict(config.tokenizer)}
    del settings["data"]["augment"], settings["data"]["temperature"]  # training changes and mixes pairs on the fly
    for corpus in settings["data"]["train"]:
        del corpus["weight"], corpus["augment"]
    for corpus in [*settings["data"]["train"], settings["data"]["valid"], settings["data"]["test"]]:
        corpus.pop("augment", None)
        for unused in [key for key in ("skip_filters", "src_lang", "tgt_lang") if not corpus[key]]:
            del corpus[unused]  # settings added later hash as before while unused: no rebuild
    if not enabled(d.filters):
        del settings["data"]["filters"]
    shares = case_shares(config)
    if shares is not None:
        settings["case_counterparts"] = True
        settings.update({"case_variants": shares} if any(shares.values()) else {})
    if d.annotates_terms():
        settings["term_markers"] = True
    if not d.alignments:
        del settings["data"]["alignments"]
    if d.alignment_units == "pieces":
        del settings["data"]["alignment_units"]  # the units before there was a choice: no rebuild
    del settings["tokenizer"]["sampling_alpha"]
    if given_spm is not None:
        given = [given_spm["src"], given_spm["tgt"] or b"", json.dumps(given_spm.get("vocab")).encode()]
        settings["given_spm"] = [hashlib.sha256(m).hexdigest() for m in given]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return {"version": FORMAT_VERSION, "config": digest, "inputs": inputs}


def _clean_training_text(config: Config, tmp: Path) -> tuple[list[dict], list[tuple]]:
    """Pass 1: read and clean every training corpus into tmp/clean.{src,tgt}.txt (one sentence a
    line; cleaned text holds no line breaks). Returns the cleaning counts per corpus and where
    each cleaned chunk lies in those files: (corpus index, source span, target span), a span
    being (byte offset, byte length), so pass 2's workers read their chunks themselves."""
    counts, spans = [no_counts(config.data) for _ in config.data.train], []
    log.info("reading and cleaning the training data")
    with open(tmp / CLEAN_TEXT[0], "wb") as src_file, open(tmp / CLEAN_TEXT[1], "wb") as tgt_file:
        for index, src, tgt, chunk_counts, _ in cleaned_training_chunks(config):
            if src:
                spans.append((index, _append_lines(src_file, src), _append_lines(tgt_file, tgt)))
            add_counts(counts[index], chunk_counts)
    for spec, corpus_counts in zip(config.data.train, counts):
        _log_cleaning(spec.name_for_logs, corpus_counts)
    if not sum(c["kept"] for c in counts):
        raise _empty_corpus({"input": sum(c["input"] for c in counts)})
    return counts, spans


def _append_lines(file: BinaryIO, lines: list[str]) -> tuple[int, int]:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    start = file.tell()
    file.write(data)
    return start, len(data)


def _read_span(path: Path, span: tuple[int, int]) -> list[str]:
    with open(path, "rb") as f:
        f.seek(span[0])
        return f.read(span[1]).decode("utf-8").split("\n")[:-1]


def _empty_corpus(counts: dict) -> MtrainError:
    pairs = f"the training corpus is empty after cleaning ({counts['input']} pairs read)"
    return MtrainError(f"{pairs}; check data.train and the cleaning limits data.min_len/max_len/max_len_ratio")


def prepare(config: Config, expected_spm: dict | None = None, given_spm: dict | None = None) -> PreparedData:
    """Build the prepared data directory unless an identical, intact one already exists.

    `expected_spm` ({"src": bytes, "tgt": bytes | None}, a resumed checkpoint's) makes a rebuild
    that would give another vocabulary fail before anything in the run directory changes;
    `given_spm` (the same form, train.init_from's model's) is used instead of training models."""
    target = config.data_dir
    wanted = fingerprint(config, given_spm)
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
    remove_stale_temporaries(target.parent, target.name)
    tmp = temporary_name(target)
    try:
        with disk_errors(f"preparing data in {target}", "the data prepared before is intact; free space and run again"):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _build(config, tmp, wanted, expected_spm, given_spm)
            _swap_in(tmp, target)
            shutil.rmtree(alignment_stage(target), ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("prepared data written to %s", target)
    return PreparedData(target)


def alignment_stage(target: Path) -> Path:
    """Where the chunks eflomal has aligned wait for the rest (data/alignments.py), beside the data:
    an interrupted prepare finds them there."""
    return target.with_name(f".mtrain-alignments~{target.name}")


def _check_vocabulary(tokenizer: Tokenizer, expected_spm: dict | None, target: Path) -> None:
    expected = Tokenizer.from_state(expected_spm).state() if expected_spm is not None else None
    if expected is not None and tokenizer.state() != expected:
        raise MtrainError(
            f"the data and tokenizer settings give another sentencepiece vocabulary than the checkpoint being resumed; "
            f"{target} and the run directory are left as they were: keep the run's data/tokenizer settings, "
            "or use --restart / a new out_dir"
        )


def _build(config: Config, tmp: Path, wanted: dict, expected_spm: dict | None, given_spm: dict | None) -> None:
    """Everything of a prepared data directory, written into `tmp`."""
    d, t = config.data, config.tokenizer
    for src_lang, tgt_lang in d.directions():
        check_filters(d.filters, src_lang, tgt_lang)
    counts, spans = _clean_training_text(config, tmp)
    pairs = sum(c["kept"] for c in counts)
    sampled = min(pairs, sample_size(t))
    log.info(
        "sentencepiece: %s",
        "the model(s) of train.init_from's model"
        if given_spm is not None
        else f"training a {t.type} model, vocabulary {t.vocab_size}, on {sampled} of {pairs} pairs (sampled with "
        "the seed)"
        if needs_training(t)
        else "loading the given model",
    )
    models = tokenizer_models(config, tmp, counts, given_spm)
    names = list(models)
    vocab = given_spm.get("vocab") if given_spm else None  # an imported model's piece-to-id vocabulary
    tokenizer = Tokenizer(models[names[0]], models[names[-1]] if len(names) > 1 else None, vocab)
    if t.case_tags and not tokenizer.case_tags:
        raise MtrainError("tokenizer.case_tags: train.init_from's model has no case tags; set it to false")
    _check_vocabulary(tokenizer, expected_spm, config.data_dir)
    for name, data in models.items():
        (tmp / name).write_bytes(data)
    if vocab is not None:
        (tmp / VOCABULARY_FILE).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    corpora, counts = _encode_training(config, tokenizer, tmp, counts, spans)
    if d.alignments:
        from mtrain.data.alignments import align_training_pairs

        pairs = (IndexedArray.open(tmp / f"train.{lang}") for lang in train_sides(d))
        stage = alignment_stage(config.data_dir)
        align_training_pairs(*pairs, tokenizer, tmp / "train.align", stage, words=d.alignment_units == "words")
    splits = {"train": {key: sum(c[key] for c in corpora) for key in ("pairs", "src_tokens", "tgt_tokens")}}
    if several_pairs(d):
        splits["train"]["langs"] = list(train_sides(d))
    for section in ("valid", "test"):
        spec = getattr(d, section)
        for name, src_lang, tgt_lang in reference_splits(d, section) if spec.is_set() else []:
            splits[name] = _encode_reference(spec, (name, src_lang, tgt_lang), tokenizer, tmp, d)
    manifest = {
        "fingerprint": wanted,
        "src_lang": d.src_lang,
        "tgt_lang": d.tgt_lang,
        **({"directions": [list(pair) for pair in d.directions()]} if several_pairs(d) else {}),
        "spm_models": {"src": names[0], "tgt": names[-1]},
        **({"vocabulary": VOCABULARY_FILE} if vocab is not None else {}),
        "vocab_size": {"src": tokenizer.src_vocab_size, "tgt": tokenizer.tgt_vocab_size},
        "special_ids": {"pad": PAD, "unk": UNK, "bos": BOS, "eos": EOS},
        "clean": counts,
        "corpora": corpora,
        "splits": splits,
        "files": file_records(tmp),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _encode_training(
    config: Config, tokenizer: Tokenizer, tmp: Path, counts: list[dict], spans: list[tuple]
) -> tuple[list[dict], dict]:
    """Pass 2: encode (in worker processes) and write the cleaned training text chunk by chunk,
    each corpus's tag before its source sentences. Returns per-corpus records and the total
    cleaning counts."""
    d = config.data
    prefixes = [[tokenizer.tag_id(piece) for piece in pieces] for pieces in source_prefixes(d)]
    src_side, tgt_side = train_sides(d)
    src = IdsWriter(tmp / f"train.{src_side}", tokenizer.src_vocab_size)
    tgt = IdsWriter(tmp / f"train.{tgt_side}", tokenizer.tgt_vocab_size)
    corpora = [
        {
            "name": c.name_for_logs,
            "tag": c.tag,
            "tag_id": tokenizer.tag_id(c.tag) if c.tag else None,
            **({"direction": list(d.direction(c))} if several_pairs(d) else {}),
            "pairs": 0,
            "src_tokens": 0,
            "tgt_tokens": 0,
        }
        for c in d.train
    ]
    log.info("encoding train")
    models = (tokenizer.src_model, tokenizer.tgt_model, json.dumps(tokenizer.vocab) if tokenizer.vocab else None)
    chunks = ((index, tmp, src_span, tgt_span, models, prefixes[index]) for index, src_span, tgt_span in spans)
    for index, src_packed, tgt_packed in ordered_map(_encode_chunk, chunks):
        src.add_packed(*src_packed)
        tgt.add_packed(*tgt_packed)
        record = corpora[index]
        record["pairs"] += len(src_packed[0])
        record["src_tokens"] += int(src_packed[0].sum())
        record["tgt_tokens"] += int(tgt_packed[0].sum())
    src.close()
    tgt.close()
    for name in CLEAN_TEXT:
        (tmp / name).unlink()
    corpus_of_pair = np.repeat(np.arange(len(d.train), dtype=np.uint16), [c["kept"] for c in counts])
    np.save(tmp / "train.corpus.npy", corpus_of_pair)
    total = no_counts(config.data)
    for record, corpus_counts in zip(corpora, counts):
        record["clean"] = corpus_counts
        add_counts(total, corpus_counts)
    return corpora, total


def _encode_chunk(index: int, tmp: Path, src_span: tuple, tgt_span: tuple, models: tuple, prefix: list[int]) -> tuple:
    """(corpus index, packed source ids, packed target ids) of one chunk of the cleaned text, the
    corpus's prefix (language token, tag) before each source; in a worker process the encoder
    uses one thread (the workers are the parallelism), here all."""
    tokenizer = _chunk_tokenizer(*models)
    threads = 1 if multiprocessing.parent_process() else None
    src = tokenizer.encode_src(_read_span(tmp / CLEAN_TEXT[0], src_span), threads)
    tgt = tokenizer.encode_tgt(_read_span(tmp / CLEAN_TEXT[1], tgt_span), threads)
    if prefix:
        src = [[*prefix, *ids] for ids in src]
    return index, pack(src, ids_dtype(tokenizer.src_vocab_size)), pack(tgt, ids_dtype(tokenizer.tgt_vocab_size))


@functools.lru_cache(maxsize=1)
def _chunk_tokenizer(src_model: bytes, tgt_model: bytes | None, vocab: str | None) -> Tokenizer:
    """The worker's tokenizer, built once per process (`vocab`: JSON text, hashable for the cache)."""
    return Tokenizer(src_model, tgt_model, json.loads(vocab) if vocab else None)


def _log_cleaning(name: str, counts: dict) -> None:
    dropped = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("input", "kept") and v)
    log.info(
        "cleaning %s: %d pairs in, %d kept (dropped: %s)", name, counts["input"], counts["kept"], dropped or "none"
    )


def _encode_reference(
    spec: CorpusConfig, split: tuple[str, str, str], tokenizer: Tokenizer, tmp: Path, d: DataConfig
) -> dict:
    """A valid/test split (name, source and target language): whitespace-normalized, kept as text
    (the references for BLEU) and encoded, a multilingual model's sources after their language token."""
    name, src_lang, tgt_lang = split
    section = name.partition(".")[0]
    src, tgt = read_corpus(spec, section, src_lang, tgt_lang)
    src, tgt = [" ".join(s.split()) for s in src], [" ".join(t.split()) for t in tgt]
    if not src:
        raise MtrainError(f"the {section} corpus is empty; check data.{section}")
    log.info("encoding %s: %d pairs", name, len(src))
    record = {"pairs": len(src), **({"langs": [src_lang, tgt_lang]} if several_pairs(d) else {})}
    prefix = [tokenizer.tag_id(target_token(tgt_lang))] if d.is_multilingual() else []
    for lang, lines, encode, vocab_size, key in (
        (
            src_lang,
            src,
            lambda part: [prefix + ids for ids in tokenizer.encode_src(part)],
            tokenizer.src_vocab_size,
            "src_tokens",
        ),
        (tgt_lang, tgt, tokenizer.encode_tgt, tokenizer.tgt_vocab_size, "tgt_tokens"),
    ):
        (tmp / f"{name}.{lang}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        writer = IdsWriter(tmp / f"{name}.{lang}", vocab_size)
        for start in range(0, len(lines), CHUNK_PAIRS):
            writer.add(encode(lines[start : start + CHUNK_PAIRS]))
        record[key] = writer.close()
    return record


def _swap_in(new: Path, target: Path) -> None:
    """Replace `target` by the complete directory `new` (each rename is atomic)."""
    old = temporary_name(target, "old")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
