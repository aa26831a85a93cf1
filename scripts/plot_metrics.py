"""Plot a run's training and validation curves from its metrics.jsonl into a PNG.

    python scripts/plot_metrics.py runs/multi30k-en-de/metrics.jsonl --output docs/multi30k-en-de.png

Needs matplotlib: pip install 'mtrain[plot]' (mtrain itself does not).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", help="metrics.jsonl file(s); one line per run in the plot")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plot_metrics.py needs matplotlib: pip install 'mtrain[plot]'")

    has_bleu = False
    runs = []
    for path in args.metrics:
        records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        train = [r for r in records if r["kind"] == "train"]
        valid = [r for r in records if r["kind"] == "valid"]
        has_bleu |= any("bleu" in r for r in valid)
        runs.append((Path(path).parent.name, train, valid))
    fig, axes = plt.subplots(1, 2 if has_bleu else 1, figsize=(11 if has_bleu else 6.5, 4.2), squeeze=False)
    loss_ax = axes[0][0]
    for name, train, valid in runs:
        loss_ax.plot([r["step"] for r in train], [r["nll"] for r in train], alpha=0.6, label=f"{name} train NLL")
        loss_ax.plot([r["step"] for r in valid], [r["nll"] for r in valid], marker="o", label=f"{name} validation NLL")
        if has_bleu:
            axes[0][1].plot([r["step"] for r in valid if "bleu" in r], [r["bleu"] for r in valid if "bleu" in r], marker="o", label=name)
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("NLL per target token (nats)")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend()
    if has_bleu:
        axes[0][1].set_xlabel("optimizer step")
        axes[0][1].set_ylabel("validation BLEU (greedy)")
        axes[0][1].grid(alpha=0.3)
        axes[0][1].legend()
    fig.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
