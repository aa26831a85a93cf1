"""Training-pair cleaning, in the spirit of Moses' clean-corpus-n.

Only the training split is filtered; validation and test sets are used as given (stripped),
so scores stay comparable with everyone else's. Each reason for dropping a pair is counted,
and the counts go into the manifest and the log.
"""

from __future__ import annotations

from mtrain.config import DataConfig

REASONS = ("empty", "too_short", "too_long", "ratio", "duplicate")


def clean_pairs(
    src: list[str], tgt: list[str], config: DataConfig, seen: set[int] | None = None
) -> tuple[list[str], list[str], dict[str, int]]:
    """Strip whitespace and drop empty, too short, too long, badly proportioned (and optionally
    duplicate) pairs. Returns the kept pairs and a count per reason. `seen` holds the hashes of
    pairs kept from earlier chunks of the corpus, so duplicates are found across chunks."""
    counts = {"input": len(src), **dict.fromkeys(REASONS, 0)}
    seen = set() if seen is None else seen
    kept_src, kept_tgt = [], []
    for s, t in zip(src, tgt):
        s, t = " ".join(s.split()), " ".join(t.split())
        if not s or not t:
            counts["empty"] += 1
            continue
        ns, nt = s.count(" ") + 1, t.count(" ") + 1
        if min(ns, nt) < config.min_len:
            counts["too_short"] += 1
        elif max(ns, nt) > config.max_len:
            counts["too_long"] += 1
        elif max(ns, nt) / min(ns, nt) > config.max_len_ratio:
            counts["ratio"] += 1
        elif config.dedup and hash((s, t)) in seen:
            counts["duplicate"] += 1
        else:
            if config.dedup:
                seen.add(hash((s, t)))
            kept_src.append(s)
            kept_tgt.append(t)
    counts["kept"] = len(kept_src)
    return kept_src, kept_tgt, counts
