"""The confidence of a translation: computed from the search's token log-probabilities as defined,
the same from both engines, Monte Carlo dropout reproducible, the calibration fitted on constructed
data, and the measurement against chrF; the commands that give and measure it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mtrain.config import ModelConfig
from mtrain.data.store import PreparedData
from mtrain.deploy.engines import open_engine
from mtrain.evaluation.confidence import (
    chrf_of,
    confidence_report,
    fit_calibration,
    sentence_chrf_statistics,
    spearman,
)
from mtrain.inference.confidence import (
    calibrated,
    features,
    mc_dropout_confidences,
    sentence_confidence,
    teacher_forced_logprobs,
    word_confidences,
)
from mtrain.inference.search import Hypothesis
from mtrain.inference.translator import encode_sources
from mtrain.model.transformer import Transformer
from mtrain.run import checkpoint
from mtrain.special import EOS

from helpers import run_cli


@pytest.fixture(scope="module")
def demo(demo_run):
    lines = PreparedData(demo_run / "data").raw_text("test", "en")[:60]
    engine = open_engine(demo_run / "checkpoint_avg.pt", device="cpu", precision="fp32")
    return demo_run / "checkpoint_avg.pt", lines, engine


# ----------------------------------------------------------------------------- definitions by hand
def test_features_and_the_confidence_are_computed_as_defined():
    logps = [-0.1, -0.5, -2.0]  # two tokens and </s>
    mean = (-0.1 - 0.5 - 2.0) / 3
    ratio = math.log(3 / 5)  # 3 output pieces with </s>, 4 source pieces + </s>
    assert features(logps, 4) == pytest.approx([mean, -2.0, ratio, ratio**2])
    assert sentence_confidence(logps, 4, None) == pytest.approx(math.exp(mean))  # uncalibrated
    calibration = {"mean": [-1.0, 0, 0, 0], "scale": [0.5, 1, 1, 1], "weights": [2.0, 1.0, 0, 0], "bias": 0.3}
    z = 0.3 + 2.0 * (mean + 1.0) / 0.5 + 1.0 * -2.0
    assert sentence_confidence(logps, 4, calibration) == pytest.approx(1 / (1 + math.exp(-z)))
    assert sentence_confidence([], 0, calibration) == 1.0  # an empty line's empty translation


def test_a_words_confidence_is_the_geometric_mean_of_its_pieces(demo):
    _, _, engine = demo
    tokenizer = engine.tokenizer
    tokens = tokenizer.encode_tgt(["der große Hund"])[0]
    pieces = [tokenizer.tgt_piece(t) for t in tokens]
    logps = [-0.1 * (i + 1) for i in range(len(tokens))] + [-0.05]
    words = word_confidences(tokenizer, Hypothesis(tokens, 0.0, sum(logps), logps))
    starts = [i for i, p in enumerate(pieces) if p.startswith("\u2581")] + [len(pieces)]
    expected = [math.exp(np.mean(logps[a:b])) for a, b in zip(starts, starts[1:])]
    assert [w["word"] for w in words] == ["der", "große", "Hund"]
    assert [w["confidence"] for w in words] == pytest.approx(expected, abs=1e-4)


def test_spearman_and_the_drop_report_are_computed_as_defined():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.corrcoef([0.5, 0.5, 2], [0, 1, 2])[0, 1])
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    refs = [f"ein Hund läuft über die Wiese Nummer {i}" for i in range(50)]
    hyps = [ref if i % 5 else "völlig andere Worte" for i, ref in enumerate(refs)]  # every 5th is wrong
    confident = [0.1 if i % 5 == 0 else 0.9 for i in range(50)]
    report = confidence_report(confident, hyps, refs)
    stats = sentence_chrf_statistics(hyps, refs)
    assert report["chrf"] == pytest.approx(chrf_of(stats))
    assert report["drop20_chrf"] == pytest.approx(100.0)  # the 10 wrong ones dropped
    assert report["drop10_chrf"] == pytest.approx(chrf_of(stats[np.argsort(confident, kind="stable")[5:]]))
    assert report["drop10_random_chrf"] == pytest.approx(report["chrf"], abs=3)
    assert report["spearman"] > 0.8 and report["drop20_gain"] > 10


def test_the_calibration_learns_which_feature_predicts_quality():
    rng = np.random.default_rng(3)
    rows = [[x, rng.normal(), rng.normal(), rng.normal()] for x in rng.normal(size=400)]
    chrf = [50 + 10 * row[0] + rng.normal() for row in rows]  # quality follows the first feature
    calibration = fit_calibration(rows, chrf)
    assert calibration["median_chrf"] == pytest.approx(float(np.median(chrf)))
    assert calibration["weights"][0] > 3 * max(abs(w) for w in calibration["weights"][1:])
    assert calibrated(calibration, [2.0, 0, 0, 0]) > 0.95 and calibrated(calibration, [-2.0, 0, 0, 0]) < 0.05
    above = [c > calibration["median_chrf"] for c in chrf]
    predicted = [calibrated(calibration, row) > 0.5 for row in rows]
    assert np.mean(np.equal(above, predicted)) > 0.9


# ----------------------------------------------------------------------------- the searches' token scores
@pytest.mark.parametrize("beam", [1, 4])
def test_the_search_keeps_each_tokens_log_probability(demo, beam):
    _, lines, engine = demo
    results = engine.translate_nbest(lines[:12], beam=beam, nbest=beam)
    sources = encode_sources(engine, lines[:12])
    for source, hyps in zip(sources, results):
        for h in hyps:
            assert len(h.token_logprobs) == len(h.tokens) + 1
            assert sum(h.token_logprobs) == pytest.approx(h.logprob, abs=1e-4)
            src = torch.tensor([source + [EOS]])
            forced = teacher_forced_logprobs(engine.model, src, torch.tensor([h.tokens + [EOS]]))[0]
            assert forced.tolist() == pytest.approx(h.token_logprobs, abs=1e-4)


def test_both_engines_give_the_same_mean_log_probability_for_the_same_output(demo, tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    monkeypatch.setenv("MTRAIN_CACHE", str(tmp_path / "cache"))
    checkpoint_path, lines, engine = demo
    ours = engine.translate_nbest(lines, beam=4)
    theirs = [[Hypothesis(h.tokens, h.score, h.logprob)] for (h,) in ours]  # the same outputs, no token scores
    ct2 = open_engine(checkpoint_path, engine="ctranslate2", quantization="float32", device="cpu")
    ct2.score_tokens(lines, theirs)
    for (a,), (b,) in zip(ours, theirs):
        assert np.mean(b.token_logprobs) == pytest.approx(np.mean(a.token_logprobs), abs=1e-3)
        assert len(b.token_logprobs) == len(a.token_logprobs)


# ----------------------------------------------------------------------------- Monte Carlo dropout
def test_mc_dropout_is_reproducible_by_seed_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    config = ModelConfig(
        d_model=32, heads=2, encoder_layers=1, decoder_layers=1, d_ff=64, dropout=0.3, max_positions=32
    )
    model = Transformer(config, 50, 50).eval()
    sources, outputs = [[5, 6, 7], [8, 9], []], [[10, 11], [12, 13, 14], []]
    state = torch.random.get_rng_state()
    first = mc_dropout_confidences(model, sources, outputs, passes=5, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state) and not model.training
    assert mc_dropout_confidences(model, sources, outputs, passes=5, seed=7) == first
    assert mc_dropout_confidences(model, sources, outputs, passes=5, seed=8) != first
    assert first[2] == 1.0 and all(0 < c < 1 for c in first[:2])


def test_mc_dropout_of_a_model_without_dropout_is_the_searchs_own_probability(demo):
    _, lines, engine = demo  # the demo model trains with dropout 0: every pass is the same
    results = engine.translate_nbest(lines[:10])
    sources = encode_sources(engine, lines[:10])
    found = mc_dropout_confidences(engine.model, sources, [hyps[0].tokens for hyps in results], passes=2)
    expected = [math.exp(np.mean(hyps[0].token_logprobs)) for hyps in results]
    assert found == pytest.approx(expected, abs=1e-4)


# ----------------------------------------------------------------------------- the commands
def test_translate_scores_tune_calibrates_and_eval_bleu_measures(demo_run, tmp_path):
    source = demo_run / "data" / "test.en.txt"
    reference = demo_run / "data" / "test.de.txt"
    plain = run_cli("translate", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), "-i", str(source))
    scored = tmp_path / "scored.tsv"
    result = run_cli("translate", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), "-i", str(source),
                     "-o", str(scored), "--scores")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "geometric mean of the output tokens' probabilities" in result.stderr  # not calibrated yet
    rows = [line.rsplit("\t", 1) for line in scored.read_text().splitlines()]
    assert [text for text, _ in rows] == plain.stdout.splitlines()
    assert all(0 <= float(value) <= 1 for _, value in rows)

    tuned = tmp_path / "tuned.pt"
    result = run_cli("tune", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), "--lenpen", "0.6", "--write",
                     "-o", str(tuned))  # fmt: skip
    assert result.returncode == 0, result.stderr
    calibration = checkpoint.load(tuned)["confidence"]
    assert calibration["sentences"] == 300 and len(calibration["weights"]) == 4
    assert "confidence: calibrated on 300 sentences" in result.stdout
    result = run_cli("translate", "--checkpoint", str(tuned), "-i", str(source), "-o", str(scored), "--scores")
    assert "probability that this translation's chrF is above the median" in result.stderr

    result = run_cli("eval-bleu", "--confidence", str(scored), "--ref", str(reference), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    hyps = [line.rsplit("\t", 1)[0] for line in scored.read_text().splitlines()]
    refs = reference.read_text().splitlines()
    values = [float(line.rsplit("\t", 1)[1]) for line in scored.read_text().splitlines()]
    assert report["confidence"] == pytest.approx(confidence_report(values, hyps, refs))
    text = run_cli("eval-bleu", "--confidence", str(scored), "--ref", str(reference)).stdout
    assert "Spearman" in text and "least confident" in text


def test_translate_mc_dropout_writes_its_confidence(demo_run, tmp_path):
    source = tmp_path / "two.en"
    source.write_text("a big dog\n\n")
    result = run_cli("translate", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), "-i", str(source),
                     "--scores", "--mc-dropout", "3")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Monte Carlo dropout passes" in result.stderr and "(3 passes)" in result.stderr
    first, empty = result.stdout.splitlines()
    assert 0 < float(first.split("\t")[1]) < 1 and empty == "\t1.0000"


BAD_SCORES = [
    (["--mc-dropout", "3"], "--mc-dropout N changes the confidence --scores writes; add --scores"),
    (["--scores", "--mc-dropout", "101"], "--mc-dropout takes 1 to 100 passes (0: off), got 101"),
    (["--scores", "--nbest", "2"], "--scores writes 'translation<TAB>confidence' per line; leave out --nbest"),
    (["--scores", "--format", "html"], "leave out --nbest, --alignment, --scores and --glossary"),
    (["--scores", "--mc-dropout", "2", "--engine", "ctranslate2"], "--mc-dropout runs the PyTorch model"),
]


@pytest.mark.parametrize("options,message", BAD_SCORES)
def test_bad_scores_options_are_one_line_errors(demo_run, tmp_path, monkeypatch, options, message):
    monkeypatch.setenv("MTRAIN_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "one.en"
    source.write_text("a dog\n")
    result = run_cli("translate", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), "-i", str(source), *options)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_bad_confidence_files_are_one_line_errors(tmp_path):
    ref = tmp_path / "ref.de"
    ref.write_text("ein Hund\nzwei Hunde\n")
    cases = {
        "ein Hund\t0.5\nzwei Hunde\tviel\n": "line 2 of",
        "ein Hund\t0.5\nzwei Hunde\tnan\n": "does not end in a number",
        "0.5\n0.7\n": "holds numbers only; give the translations they score with --hyp",
        "ein Hund\t0.5\n": "line counts differ",
    }
    for text, message in cases.items():
        path = tmp_path / "conf.tsv"
        path.write_text(text)
        result = run_cli("eval-bleu", "--confidence", str(path), "--ref", str(ref))
        assert result.returncode == 2 and message in result.stderr, (text, result.stderr)
    hyp = tmp_path / "hyp.de"
    hyp.write_text("ein Hund\nzwei Hunde\n")
    (tmp_path / "numbers").write_text("0.5\n")
    result = run_cli("eval-bleu", "--hyp", str(hyp), "--confidence", str(tmp_path / "numbers"), "--ref", str(ref))
    assert result.returncode == 2 and "give one confidence per translated sentence" in result.stderr
    result = run_cli("eval-bleu", "--confidence", str(tmp_path / "missing"), "--ref", str(ref))
    assert result.returncode == 2 and "confidence file not found" in result.stderr


def test_an_ensembles_confidence_is_that_of_its_mixture(demo):
    from mtrain.inference.confidence import line_confidences
    from mtrain.inference.translator import Translator, load_models

    checkpoint_path, lines, engine = demo
    model, tokenizer, info = load_models([checkpoint_path, checkpoint_path], engine.device)
    twice = Translator(model, tokenizer, engine.config, engine.device, "fp32", info)
    single = line_confidences(engine, lines[:10], engine.translate_nbest(lines[:10]))
    assert line_confidences(twice, lines[:10], twice.translate_nbest(lines[:10])) == pytest.approx(single, abs=1e-5)
    mc = line_confidences(twice, lines[:10], twice.translate_nbest(lines[:10]), mc_dropout=2)
    assert mc == pytest.approx(single, abs=1e-4)  # no dropout in the demo model: the search's own probabilities
