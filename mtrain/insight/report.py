"""`mtrain report RUN_DIR`: one self-contained HTML page about a finished run.

The page carries everything inline (styles, and images as base64 PNG), so it can be mailed,
attached to an issue or opened from a CI artifact: the config, the data statistics from the
manifest, the learning curves, the last validation scores, the test set decoded once with the
chosen checkpoint (BLEU and chrF with their sacreBLEU signatures, and the decoding speed), and a
few example translations with the cross-attention that produced them.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from mtrain import __version__
from mtrain.data.store import PreparedData, read_manifest
from mtrain.errors import MtrainError
from mtrain.evaluation.scores import corpus_scores
from mtrain.files import atomic_write_text
from mtrain.inference.translator import Translator, open_translator
from mtrain.insight import plots
from mtrain.insight.alignment import alignment_source
from mtrain.insight.attention import attention_maps
from mtrain.run.checkpoint import load as load_checkpoint
from mtrain.run.directory import prepared_data_dir

CHECKPOINT_PREFERENCE = ("checkpoint_avg.pt", "checkpoint_best.pt", "checkpoint_last.pt")
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#f4f4f4}pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em;max-height:28em}
img{max-width:100%}.example{margin:1em 0 2em}.muted{color:#777;font-size:.9em}code{font-size:.9em}"""


def choose_checkpoint(run_dir: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    for name in CHECKPOINT_PREFERENCE:
        if (run_dir / name).is_file():
            return run_dir / name
    raise MtrainError(
        f"{run_dir} has no checkpoint (checkpoint_avg.pt, checkpoint_best.pt or checkpoint_last.pt); "
        "train it first, or give --checkpoint"
    )


def _image(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def data_section(manifest: dict | None) -> str:
    if manifest is None:
        return '<p class="muted">no prepared data manifest found</p>'
    rows = [(split, c["pairs"], c["src_tokens"], c["tgt_tokens"]) for split, c in manifest["splits"].items()]
    clean = ", ".join(f"{k}: {v}" for k, v in manifest.get("clean", {}).items())
    vocab = manifest["vocab_size"]
    corpora = [
        (c["name"], c["tag"] or "-", c["pairs"], c["src_tokens"], c["tgt_tokens"]) for c in manifest.get("corpora", [])
    ]
    return (
        _table(rows, ("split", "pairs", "source tokens", "target tokens"))
        + (
            _table(corpora, ("training corpus", "tag", "pairs", "source tokens", "target tokens"))
            if len(corpora) > 1
            else ""
        )
        + f"<p>vocabulary: {vocab['src']} source / {vocab['tgt']} target pieces; cleaning: {html.escape(clean)}</p>"
    )


def origin_line(records: list[dict]) -> str:
    """Where a run with train.init_from started (its metrics.jsonl records it), or nothing."""
    start = next((r for r in records if r["kind"] == "init_from"), None)
    if start is None:
        return ""
    text = f"started from {start['path']} (step {start['source_step']}, sha256 {start['sha256']})"
    return f'<p class="muted">{html.escape(text)}</p>'


def validation_section(records: list[dict]) -> str:
    valid = [r for r in records if r["kind"] == "valid"]
    if not valid:
        return '<p class="muted">no validation records</p>'
    last, best = valid[-1], min(valid, key=lambda r: r["loss"])
    keys = [k for k in ("loss", "nll", "ppl", "bleu") if k in last]
    labelled = [("last", last), ("best loss", best)]
    labelled += [(f"last, {pair}", {"step": last["step"], **r}) for pair, r in last.get("directions", {}).items()]
    rows = [(label, r["step"], *(f"{r[k]:.3f}" for k in keys)) for label, r in labelled]
    return _table(rows, ("validation", "step", *keys))


def test_section(
    translator: Translator, data: PreparedData | None, max_sentences: int
) -> tuple[str, list[tuple[str, str, str]]]:
    """Decode the test set (or validation set) once, each language pair's of a multilingual model:
    scores, signatures, speed; returns examples too (the last pair's, which the translator is left
    translating into)."""
    section = next((s for s in ("test", "valid") if data is not None and data.reference_splits(s)), None)
    if section is None:
        return '<p class="muted">the run has no test or validation set to decode</p>', []
    parts, examples = [], []
    for split in data.reference_splits(section):
        part, examples = _split_scores(translator, data, split, max_sentences)
        parts.append(part)
    return "".join(parts), examples


def _split_scores(
    translator: Translator, data: PreparedData, split: str, max_sentences: int
) -> tuple[str, list[tuple[str, str, str]]]:
    src_lang, tgt_lang = data.split_langs(split)
    translator.config = dataclasses.replace(translator.config, tgt_lang=data.asked_language(split))
    sources = data.raw_text(split, src_lang)[:max_sentences]
    references = data.raw_text(split, tgt_lang)[:max_sentences]
    start = time.perf_counter()
    hypotheses = translator.translate(sources)
    seconds = time.perf_counter() - start
    scores = corpus_scores(hypotheses, [references], tgt_lang=tgt_lang)
    words = sum(len(h.split()) for h in hypotheses)
    rows = [
        ("BLEU", f"{scores['bleu']:.2f}", scores["bleu_signature"]),
        ("chrF2", f"{scores['chrf']:.2f}", scores["chrf_signature"]),
    ]
    speed = (
        f"<p>{len(sources)} {split} sentences, beam {translator.config.beam}, lenpen {translator.config.lenpen}, "
        f"{translator.device} {translator.precision}: {seconds:.1f} s ({len(sources) / seconds:.1f} sentences/s, "
        f"{words / seconds:.0f} words/s); {html.escape(scores['bleu_detail'])}</p>"
    )
    section, _, pair = split.partition(".")
    header = (f"{section} set" + (f", {src_lang} → {tgt_lang}" if pair else ""), "score", "sacreBLEU signature")
    return _table(rows, header) + speed, list(zip(sources, references, hypotheses))


def examples_section(translator: Translator, examples: list[tuple[str, str, str]]) -> str:
    parts = []
    layer, head = alignment_source(translator)
    for source, reference, hypothesis in examples:
        maps = attention_maps(translator, source)
        weights, rows, columns = maps.of("cross")
        shown, which = (
            (weights[layer - 1].mean(0), "mean of heads")
            if head is None
            else (weights[layer - 1, head], f"head {head} (guided)")
        )
        figure = plots.single_heatmap(shown, rows, columns, f"cross-attention, layer {layer}, {which}")
        parts.append(
            f'<div class="example">{_table([("source", source), ("reference", reference), ("mtrain", hypothesis)])}'
            f"{_image(plots.png_bytes(figure), 'cross-attention of the example')}</div>"
        )
    return "".join(parts) or '<p class="muted">no examples</p>'


def report_command(
    run_dir: Path,
    output: Path,
    checkpoint: Path | None = None,
    examples: int = 3,
    max_sentences: int = 1000,
    device: str = "auto",
) -> Path:
    """Write the report page of `run_dir` to `output`; returns the checkpoint it decoded with."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MtrainError(f"run directory not found: {run_dir}")
    if Path(output).is_dir():
        raise MtrainError(f"--output {output} is a directory; give a file name, e.g. {Path(output) / 'report.html'}")
    records = plots.read_metrics(run_dir)
    chosen = choose_checkpoint(run_dir, checkpoint)
    plots.pyplot()  # fail early, before decoding, when matplotlib is missing
    translator = open_translator(chosen, device)
    saved = run_dir / "config.yaml"  # the run's resolved config: its data.dir without loading the checkpoint again
    config_text = saved.read_text(encoding="utf-8") if saved.is_file() else None
    config = yaml.safe_load(config_text) if config_text else load_checkpoint(chosen)["config"]
    data_dir = prepared_data_dir(config, run_dir)
    manifest = read_manifest(data_dir)
    data = PreparedData(data_dir) if manifest is not None else None
    scores, decoded = test_section(translator, data, max_sentences)
    config_text = config_text or json.dumps(translator.info, indent=2)
    info = translator.info
    pairs = [f"{src} → {tgt}" for src, tgt in (manifest or {}).get("directions", [])]
    title = f"mtrain run {run_dir.name}: {', '.join(pairs) or info['src_lang'] + ' → ' + info['tgt_lang']}"
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="muted">{html.escape(str(run_dir))} · checkpoint {html.escape(chosen.name)} (step {info["step"]}) ·
written {datetime.now(timezone.utc).isoformat(timespec="seconds")} by mtrain {__version__}</p>{origin_line(records)}
<h2>Learning curves</h2>{_image(plots.png_bytes(plots.metrics_figure([run_dir])), "learning curves")}
<h2>Scores</h2>{validation_section(records)}{scores}
<h2>Examples and their cross-attention</h2>{examples_section(translator, decoded[:examples])}
<h2>Data</h2>{data_section(manifest)}
<h2>Model</h2>{_table([(k, v) for k, v in info["model"].items()])}
<h2>Config</h2><pre>{html.escape(config_text)}</pre>
</body></html>
"""
    atomic_write_text(Path(output), page)
    return chosen
