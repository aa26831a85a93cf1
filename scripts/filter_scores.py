"""How well data.filters find known noise: each filter of a config applied to every pair of a
corpus made by scripts/make_noisy.py, scored against its {corpus}.noise labels. Prints a Markdown
table (per kind of noise: pairs, dropped, by which filter) and one JSON line with precision and recall.

    python scripts/filter_scores.py --config configs/multi30k.yaml --corpus runs/noise-data/train \
        --set 'data.filters={langid: true, copy: true}'
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.config_io import load_config  # noqa: E402
from mtrain.data.filters import Side, check, pair_tests  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--corpus", required=True, help="the prefix of {corpus}.en, {corpus}.de, {corpus}.noise")
    parser.add_argument("--set", action="append", default=[], help="a config override, as mtrain's --set")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    d = config.data
    check(d.filters, d.src_lang, d.tgt_lang)
    tests = pair_tests(d.filters, d.src_lang, d.tgt_lang, [])
    en, de, kinds = (
        Path(f"{args.corpus}.{suffix}").read_text(encoding="utf-8").splitlines() for suffix in ("en", "de", "noise")
    )
    by_kind, dropped_by = Counter(kinds), defaultdict(Counter)
    sides = Side([" ".join(s.split()) for s in en]), Side([" ".join(t.split()) for t in de])
    alive = np.ones(len(kinds), dtype=bool)
    for name, test in tests:  # a pair counts for the first filter that drops it, as in prepare
        dropped = test(*sides, alive) & alive
        for i in np.flatnonzero(dropped):
            dropped_by[kinds[i]][name] += 1
        alive &= ~dropped
    names = [name for name, _ in tests]
    print("| kind | pairs | dropped | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for kind in sorted(by_kind, key=lambda k: (k == "clean", k)):
        row = [kind, by_kind[kind], sum(dropped_by[kind].values()), *(dropped_by[kind][n] for n in names)]
        print("| " + " | ".join(map(str, row)) + " |")
    noisy = sum(n for k, n in by_kind.items() if k != "clean")
    dropped_noisy = sum(sum(c.values()) for k, c in dropped_by.items() if k != "clean")
    dropped = dropped_noisy + sum(dropped_by["clean"].values())
    print(json.dumps({
        "pairs": len(kinds), "noisy": noisy, "dropped": dropped,
        "precision": round(dropped_noisy / dropped, 4) if dropped else None,
        "recall": round(dropped_noisy / noisy, 4) if noisy else None,
        "recall_without_misaligned": round(
            (dropped_noisy - sum(dropped_by["misaligned"].values())) / (noisy - by_kind["misaligned"]), 4
        ) if noisy > by_kind["misaligned"] else None,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
