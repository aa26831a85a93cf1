"""Training-pair cleaning, in the spirit of Moses' clean-corpus-n, then data.filters (filters.py),
chunk by chunk in worker processes.

Only the training split is filtered; validation and test sets are used as given (stripped),
so scores stay comparable with everyone else's. Each reason for dropping a pair is counted,
and the counts go into the manifest and the log.
"""

from __future__ import annotations

from collections.abc import Iterator

from mtrain.config import Config, DataConfig
from mtrain.data.filters import SAMPLES, check, enabled, filter_pairs, pair_tests
from mtrain.data.parallel import ordered_map
from mtrain.data.sources import corpus_chunks

CHUNK_PAIRS = 50_000  # training pairs read, cleaned, encoded and written at a time (bounds memory)

REASONS = ("empty", "too_short", "too_long", "ratio", "duplicate")


def clean_pairs(src: list[str], tgt: list[str], config: DataConfig) -> tuple[list[str], list[str], dict[str, int]]:
    """Normalize whitespace and drop empty, too short, too long and badly proportioned pairs.
    Returns the kept pairs and a count per reason ("duplicate" is left to `drop_duplicates`,
    which needs every earlier chunk: this function sees one chunk, maybe in a worker process)."""
    counts = {"input": len(src), **dict.fromkeys(REASONS, 0)}
    min_len, max_len, max_ratio = config.min_len, config.max_len, config.max_len_ratio
    kept_src, kept_tgt = [], []
    for s, t in zip(src, tgt):
        s_words, t_words = s.split(), t.split()
        ns, nt = len(s_words), len(t_words)
        if not ns or not nt:
            counts["empty"] += 1
        elif ns < min_len or nt < min_len:
            counts["too_short"] += 1
        elif ns > max_len or nt > max_len:
            counts["too_long"] += 1
        elif (ns / nt if ns > nt else nt / ns) > max_ratio:
            counts["ratio"] += 1
        else:
            kept_src.append(" ".join(s_words))
            kept_tgt.append(" ".join(t_words))
    counts["kept"] = len(kept_src)
    return kept_src, kept_tgt, counts


def drop_duplicates(
    src: list[str], tgt: list[str], counts: dict[str, int], seen: set[int]
) -> tuple[list[str], list[str]]:
    """The pairs not seen before (`seen` holds the hashes of pairs kept from earlier chunks and
    corpora, and gets these); `counts` moves the dropped ones from "kept" to "duplicate"."""
    kept_src, kept_tgt = [], []
    for s, t in zip(src, tgt):
        key = hash((s, t))
        if key not in seen:
            seen.add(key)
            kept_src.append(s)
            kept_tgt.append(t)
    counts["duplicate"] += len(src) - len(kept_src)
    counts["kept"] = len(kept_src)
    return kept_src, kept_tgt


def no_counts(data: DataConfig | None = None) -> dict[str, int]:
    """Zero counts per reason: cleaning's, then the filters data.filters turns on."""
    filters = enabled(data.filters) if data is not None else []
    return {"input": 0, **dict.fromkeys(REASONS, 0), **dict.fromkeys(filters, 0), "kept": 0}


def add_counts(total: dict, counts: dict) -> None:
    for key, value in counts.items():
        total[key] += value


def dry_run(config: Config) -> tuple[list[dict], dict[str, list]]:
    """What cleaning and data.filters would drop, without writing anything: counts per training
    corpus, and a few dropped pairs per filter."""
    for src_lang, tgt_lang in config.data.directions():
        check(config.data.filters, src_lang, tgt_lang)
    counts, samples = [no_counts(config.data) for _ in config.data.train], {}
    for index, _, _, chunk_counts, chunk_samples in cleaned_training_chunks(config):
        add_counts(counts[index], chunk_counts)
        for name, pairs in chunk_samples.items():
            kept = samples.setdefault(name, [])
            kept.extend(pairs[: SAMPLES - len(kept)])
    return counts, samples


def cleaned_training_chunks(config: Config) -> Iterator[tuple[int, list[str], list[str], dict, dict]]:
    """(corpus index, source lines, target lines, counts per reason, a few dropped pairs per
    filter) of every training chunk, in data.train's order, cleaned and filtered in worker
    processes; duplicates are found here, across chunks and corpora."""
    d, seen = config.data, set()
    raw = (
        (index, *chunk, d)
        for index, spec in enumerate(d.train)
        for chunk in corpus_chunks(spec, "train", *d.direction(spec), CHUNK_PAIRS)
    )
    for index, src, tgt, counts, samples in ordered_map(_clean_chunk, raw):
        if d.dedup:
            src, tgt = drop_duplicates(src, tgt, counts, seen)
        yield index, src, tgt, counts, samples


def _clean_chunk(index: int, src: list[str], tgt: list[str], data: DataConfig) -> tuple:
    """Clean one chunk, then filter it (data.filters, less the corpus's skip_filters): (corpus index,
    kept pairs, counts per reason, a few dropped pairs per filter)."""
    src, tgt, counts = clean_pairs(src, tgt, data)
    spec = data.train[index]
    tests = pair_tests(data.filters, *data.direction(spec), spec.skip_filters)
    src, tgt, dropped, samples = filter_pairs(src, tgt, tests)
    kept = counts.pop("kept")
    counts.update(dropped)
    counts["kept"] = kept - sum(dropped.values())
    return index, src, tgt, counts, samples
