"""Pictures: attention heatmaps, learning curves, the sinusoidal position encodings.

matplotlib is the `plot` extra (pip install 'mtrain[plot]'), imported only here and only when a
picture is drawn, with the Agg backend (no display needed). Every figure has a fixed size in
pixels, so `mtrain plot ...` always writes the same image size; PNGs are written atomically.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from mtrain.errors import MtrainError
from mtrain.extras import require
from mtrain.files import write_atomically
from mtrain.insight.attention import KINDS, AttentionMaps
from mtrain.model.transformer import sinusoidal_positions
from mtrain.run.metrics import METRICS_FILE

if TYPE_CHECKING:  # matplotlib is an optional extra, imported when drawing
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend, or a one-line error saying how to install it."""
    matplotlib = require("matplotlib", "plot", "drawing")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure: Figure, path: Path) -> None:
    write_atomically(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
    pyplot().close(figure)


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    pyplot().close(figure)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- attention


def _heatmap(
    ax: Axes, weights: torch.Tensor, rows: list[str], columns: list[str], title: str, labels: bool = True
) -> None:
    ax.imshow(weights.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    if labels:
        ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])


def single_heatmap(weights: torch.Tensor, rows: list[str], columns: list[str], title: str) -> Figure:
    """One labelled heatmap (for reports)."""
    size = max(3.0, 0.25 * max(len(rows), len(columns)) + 1.5)
    figure, ax = pyplot().subplots(figsize=(size, size))
    _heatmap(ax, weights, rows, columns, title)
    figure.tight_layout()
    return figure


def attention_figure(
    maps: AttentionMaps, kind: str = "cross", layer: int | None = None, head: int | None = None
) -> Figure:
    """Default: every layer averaged over heads (top row) and every head of the last layer (bottom
    row). With --layer: that layer's heads and their average; with --head too: that one head."""
    if kind not in KINDS:
        raise MtrainError(f"--kind must be one of {', '.join(KINDS)}, got '{kind}'")
    weights, rows, columns = maps.of(kind)
    layers, heads = weights.shape[:2]
    if layer is not None and not 1 <= layer <= layers:
        raise MtrainError(f"--layer must be between 1 and {layers} (the model's {kind} layers), got {layer}")
    if head is not None and not 1 <= head <= heads:
        raise MtrainError(f"--head must be between 1 and {heads} (the model's heads), got {head}")
    chosen = (layer or layers) - 1
    if head is not None:
        panels = [[(weights[chosen, head - 1], f"layer {chosen + 1}, head {head}")]]
    elif layer is not None:
        panels = [
            [(weights[chosen].mean(0), f"layer {layer}, mean of heads")],
            [(weights[chosen, h], f"layer {layer}, head {h + 1}") for h in range(heads)],
        ]
    else:
        panels = [
            [(weights[i].mean(0), f"layer {i + 1}, mean of heads") for i in range(layers)],
            [(weights[chosen, h], f"layer {chosen + 1}, head {h + 1}") for h in range(heads)],
        ]
    columns_n = max(len(row) for row in panels)
    cell = max(2.6, 0.22 * max(len(rows), len(columns)) + 1.2)
    plt = pyplot()
    figure, axes = plt.subplots(len(panels), columns_n, figsize=(cell * columns_n, cell * len(panels)), squeeze=False)
    for r, row in enumerate(panels):
        for c in range(columns_n):
            if c < len(row):
                _heatmap(axes[r][c], row[c][0], rows, columns, row[c][1])
            else:
                axes[r][c].axis("off")
    names = {
        "cross": "cross-attention (rows: produced pieces, columns: source)",
        "encoder": "encoder self-attention",
        "decoder": "decoder self-attention (rows: inputs, causal)",
    }
    figure.suptitle(f"{names[kind]}\n{maps.translation}", fontsize=10)
    figure.tight_layout()
    return figure


# ----------------------------------------------------------------------------- learning curves


NUMBERS = ("step", "epoch", "loss", "nll", "ppl", "bleu", "lr", "tgt_tokens_per_s", "grad_norm", "elapsed_s")


def well_formed(record: object) -> bool:
    """A metrics record the plots and the report can use: a dict with a kind, a step, and numbers
    where numbers belong (a hand-edited "loss": "low" is skipped like a damaged line)."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("kind"), str)
        and "step" in record
        and all(isinstance(record[k], (int, float)) and not isinstance(record[k], bool) for k in NUMBERS if k in record)
    )


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a damaged or malformed line is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise MtrainError(f"{run_dir} has no {METRICS_FILE}; give a run directory written by mtrain train")
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if well_formed(record):
            records.append(record)
    if not records:
        raise MtrainError(f"{path} holds no training records yet")
    return records


CURVES = [  # (panel title, record kind, value key, x key)
    ("loss (train: solid, valid: dashed)", "train", "loss", "step"),
    ("validation BLEU (greedy)", "valid", "bleu", "step"),
    ("learning rate", "train", "lr", "step"),
    ("target tokens / s", "train", "tgt_tokens_per_s", "step"),
    ("validation loss against time", "valid", "loss", "elapsed_s"),
    ("validation perplexity", "valid", "ppl", "step"),
]


def metrics_figure(run_dirs: list[Path]) -> Figure:
    """Learning curves of one or several runs (overlaid, labelled by directory name), 1500 x 900 px."""
    runs = [(Path(d).name or str(d), read_metrics(d)) for d in run_dirs]
    plt = pyplot()
    figure, axes = plt.subplots(2, 3, figsize=(15, 9))
    for ax, (title, kind, key, x_key) in zip(axes.flat, CURVES):
        for index, (name, records) in enumerate(runs):
            color = f"C{index}"
            points = [(r[x_key], r[key]) for r in records if r["kind"] == kind and key in r and x_key in r]
            if points:
                ax.plot(*zip(*points), color=color, label=name)
            if kind == "valid":
                _plot_directions(ax, records, key, x_key, color, name)
            if key == "loss" and x_key == "step":
                valid = [(r["step"], r["loss"]) for r in records if r["kind"] == "valid"]
                if valid:
                    ax.plot(*zip(*valid), color=color, linestyle="--", marker="o", markersize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training time (s)" if x_key == "elapsed_s" else "step")
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(
                0.5,
                0.5,
                "not recorded" + (" (set train.valid_bleu: true)" if key == "bleu" else ""),
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def _plot_directions(ax, records: list[dict], key: str, x_key: str, color: str, name: str) -> None:  # noqa: ANN001
    """A multilingual run's validation value per language pair, thin and in its run's color, one marker per pair."""
    valid = [r for r in records if r["kind"] == "valid" and "directions" in r and x_key in r]
    pairs = list(valid[-1]["directions"]) if valid else []
    for marker, pair in zip("^vsPXD*", pairs):
        points = [(r[x_key], r["directions"][pair][key]) for r in valid if key in r["directions"].get(pair, {})]
        if points:
            ax.plot(*zip(*points), color=color, linewidth=0.8, marker=marker, markersize=4, label=f"{name} {pair}")
    if pairs:
        ax.legend(fontsize=7)


# ----------------------------------------------------------------------------- positions


def positions_figure(d_model: int = 512, length: int = 100) -> Figure:
    """Section 3.5's encodings: the matrix PE(pos, i) and four sine dimensions, from fast to slow
    (about 1%, 6%, 12% and 25% of the way through d_model), against position; 1400 x 600 px."""
    if d_model < 2 or d_model % 2:
        raise MtrainError(f"--d-model must be an even number >= 2, got {d_model}")
    if length < 2:
        raise MtrainError(f"--length must be >= 2, got {length}")
    table = sinusoidal_positions(length, d_model)
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 6))
    image = left.imshow(table.numpy(), cmap="RdBu", aspect="auto", vmin=-1, vmax=1)
    left.set_title(f"PE(pos, i), d_model = {d_model}: sin on even i, cos on odd i")
    left.set_xlabel("dimension i")
    left.set_ylabel("position")
    figure.colorbar(image, ax=left)
    for i in sorted({2 * round(f * d_model / 2) for f in (0.01, 0.0625, 0.125, 0.25)}):
        wavelength = 2 * math.pi * 10000 ** (i / d_model)
        right.plot(range(length), table[:, i].numpy(), label=f"dimension {i} (wavelength {wavelength:.0f})")
    right.set_title("wavelengths grow geometrically from 2π to 10000·2π along the dimensions")
    right.set_xlabel("position")
    right.legend()
    figure.tight_layout()
    return figure
