"""Looking inside a model: attention maps, word alignments (measured by AER), plots, the run report."""

from __future__ import annotations

import json
import struct
import sys

import pytest
import torch

from mtrain.data.sources import demo_split
from mtrain.errors import MtrainError
from mtrain.inference.translator import open_translator
from mtrain.insight import alignment, attention

from helpers import run_cli


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def translator(demo_run):
    return open_translator(demo_run / "checkpoint_avg.pt", "cpu")


def test_attention_weights_are_distributions_causal_and_belong_to_the_translation(demo_run, translator):
    text = "Today the small dog sees a red ball, because the cat likes the teacher."
    maps = attention.attention_maps(translator, text)
    layers, heads = len(translator.model.decoder), translator.model.config.heads
    s, t = len(maps.source), len(maps.produced)
    assert maps.source[-1] == "</s>" and maps.produced[-1] == "</s>" and maps.decoder_inputs[0] == "<s>"
    assert maps.cross.shape == (layers, heads, t, s) and maps.decoder.shape == (layers, heads, t, t)
    assert maps.encoder.shape == (len(translator.model.encoder), heads, s, s)
    for weights in (maps.cross, maps.decoder, maps.encoder):
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert maps.decoder.triu(1).abs().max() == 0  # no step looks at a later one
    cli = run_cli("translate", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), input=text + "\n")
    assert maps.translation == cli.stdout.strip() == translator.translate([text])[0]


def test_the_default_alignment_layer_beats_a_monotone_diagonal(translator):
    """AER against the generator's gold alignments, on held-out sentences the model translates exactly."""
    sources, references, gold = demo_split(300, "test", "en", "de")
    hyps = [h[0] for h in translator.translate_nbest(sources)]
    exact = [i for i, h in enumerate(hyps) if translator.tokenizer.decode_tgt(h.tokens) == references[i]]
    assert len(exact) > 200
    layer = alignment.default_alignment_layer(len(translator.model.decoder))
    found = alignment.alignments(translator, [sources[i] for i in exact], [hyps[i].tokens for i in exact], layer)
    model_aer = alignment.alignment_error_rate(found, [gold[i] for i in exact])
    diagonal = [alignment.diagonal(len(sources[i].split()), len(references[i].split())) for i in exact]
    diagonal_aer = alignment.alignment_error_rate(diagonal, [gold[i] for i in exact])
    assert model_aer < diagonal_aer - 0.15, (model_aer, diagonal_aer)


def test_translate_alignment_appends_pharaoh_links_for_every_target_word(demo_run):
    lines = ["The dog sees a cat.", "", "Now two men buy the old car."]
    result = run_cli(
        "translate", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), "--alignment", input="\n".join(lines) + "\n"
    )
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.splitlines()
    assert len(outputs) == 3 and outputs[1] == " ||| "
    for source, output in zip(lines, outputs):
        text, links = output.split(" ||| ")
        pairs = [tuple(map(int, link.split("-"))) for link in links.split()]
        assert sorted(j for _, j in pairs) == list(range(len(text.split())))
        assert all(0 <= i < len(source.split()) for i, _ in pairs)
    nbest = run_cli(
        "translate",
        "--checkpoint",
        str(demo_run / "checkpoint_avg.pt"),
        "--alignment",
        "--nbest",
        "2",
        input=lines[0] + "\n",
    )
    assert [line.count(" ||| ") for line in nbest.stdout.splitlines()] == [3, 3]
    refused = run_cli(
        "translate",
        "--checkpoint",
        str(demo_run / "checkpoint_avg.pt"),
        "--alignment",
        "--alignment-layer",
        "9",
        input="a\n",
    )
    assert (
        refused.returncode == 2
        and "--alignment-layer must be between 1 and the model's 2 decoder layers" in refused.stderr
    )


def test_attention_command_writes_a_png_or_the_raw_weights(demo_run, tmp_path):
    checkpoint = str(demo_run / "checkpoint_avg.pt")
    result = run_cli(
        "attention", "--checkpoint", checkpoint, "--text", "The dog sees a cat.", "-o", str(tmp_path / "a.png")
    )
    assert result.returncode == 0, result.stderr
    assert min(png_size(tmp_path / "a.png")) > 300
    result = run_cli(
        "attention",
        "--checkpoint",
        checkpoint,
        "--text",
        "The dog sees a cat.",
        "-o",
        str(tmp_path / "a.json"),
        "--format",
        "json",
        "--kind",
        "decoder",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    weights = torch.tensor(data["weights"])
    assert (
        weights.shape[2] == weights.shape[3] == len(data["rows"]) == len(data["columns"]) and data["rows"][0] == "<s>"
    )
    bad = run_cli("attention", "--checkpoint", checkpoint, "--text", "x", "-o", str(tmp_path / "b.png"), "--layer", "5")
    assert bad.returncode == 2 and "--layer must be between 1 and 2" in bad.stderr and "Traceback" not in bad.stderr


def test_plot_commands_write_pngs_of_the_stated_size(demo_run, tmp_path):
    assert run_cli("plot", "metrics", str(demo_run), str(demo_run), "-o", str(tmp_path / "m.png")).returncode == 0
    assert png_size(tmp_path / "m.png") == (1500, 900)
    assert run_cli("plot", "positions", "--d-model", "128", "-o", str(tmp_path / "p.png")).returncode == 0
    assert png_size(tmp_path / "p.png") == (1400, 600)


def test_plot_and_report_mistakes_are_one_line_errors(demo_run, tmp_path):
    result = run_cli("plot", "metrics", str(tmp_path), "-o", str(tmp_path / "m.png"))
    assert result.returncode == 2 and "has no metrics.jsonl" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text((demo_run / "metrics.jsonl").read_text())
    result = run_cli("report", str(tmp_path / "run"), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2 and "has no checkpoint" in result.stderr
    result = run_cli("plot", "positions", "--d-model", "7", "-o", str(tmp_path / "p.png"))
    assert result.returncode == 2 and "--d-model must be an even number" in result.stderr


def test_a_missing_plot_extra_says_what_to_install(monkeypatch):
    from mtrain.insight import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MtrainError, match=r"pip install 'mtrain\[plot\]'"):
        plots.positions_figure()


def test_report_is_one_self_contained_page(demo_run, tmp_path):
    out = tmp_path / "report.html"
    result = run_cli("report", str(demo_run), "-o", str(out), "--max-sentences", "40", "--examples", "2")
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert page.count("<img") == 3  # curves + two examples
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in page and "chrF2" in page and "sentences/s" in page
    assert 'src="http' not in page and "<script" not in page


def test_malformed_metrics_records_are_skipped_like_damaged_lines(tmp_path):
    from mtrain.insight.plots import read_metrics

    lines = [
        {"kind": "train", "step": 1, "loss": 5.0},
        {"kind": "valid", "step": 1, "loss": "low"},  # hand-edited: a string where a number belongs
        {"kind": "train", "step": True, "loss": 4.0},
        ["not", "a", "record"],
        {"kind": "init_from", "step": 0, "path": "a.pt", "source_step": 9, "sha256": "ab"},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "{broken\n")
    assert read_metrics(tmp_path) == [lines[0], lines[4]]
