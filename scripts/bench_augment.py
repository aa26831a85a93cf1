"""Augmentation benchmark: the cost of data.augment per epoch beside the training time of an epoch.

    python scripts/bench_augment.py --run runs/multi30k-en-de [--config configs/multi30k-robust.yaml]

Reads a finished run's prepared data and metrics.jsonl (its training seconds per epoch: the last
record's elapsed_s over its epoch), builds the epochs of the augmented config's data.augment on that
data (three epochs, each timed), and prints one JSON line: seconds per epoch augmenting, pairs
changed, and the augmentation's share of an epoch of training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.config_io import load_config  # noqa: E402
from mtrain.data.augment import Augmenter  # noqa: E402
from mtrain.data.store import PreparedData  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="A finished training run (its data/ and metrics).")
    parser.add_argument("--config", default="configs/multi30k-robust.yaml", help="Where data.augment comes from.")
    args = parser.parse_args()
    config = load_config(args.config)
    data = PreparedData(args.run / "data")
    settings = config.data.corpus_augments()
    augmenter = Augmenter(data.split("train"), data.tokenizer(), settings, [c["tag_id"] for c in data.corpora], 1)
    seconds, changed = [], []
    for epoch in (1, 2, 3):
        started = time.perf_counter()
        augmenter(epoch)
        seconds.append(time.perf_counter() - started)
        changed.append(int(sum(m.sum() for m in augmenter.changes(epoch).values())))
    records = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["kind"] == "train"][-1]
    epoch_s = last["elapsed_s"] / last["epoch"]
    augment_s = statistics.median(seconds)
    print(
        json.dumps(
            {
                "pairs": len(data.split("train")),
                "changes_per_epoch": changed,
                "augment_s_per_epoch": round(augment_s, 3),
                "train_s_per_epoch": round(epoch_s, 1),
                "share_of_epoch_pct": round(100 * augment_s / epoch_s, 2),
                "augment": {k: v for k, v in vars(settings[0]).items() if v},
            }
        )
    )


if __name__ == "__main__":
    main()
