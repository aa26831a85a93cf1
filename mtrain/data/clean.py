"""Training-pair cleaning, in the spirit of Moses' clean-corpus-n.

Only the training split is filtered; validation and test sets are used as given (stripped),
so scores stay comparable with everyone else's. Each reason for dropping a pair is counted,
and the counts go into the manifest and the log.
"""

from __future__ import annotations

from mtrain.config import DataConfig

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
