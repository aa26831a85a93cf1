"""Ensemble decoding: several checkpoints searched as one model whose next-token probability is
the mean of theirs; what the search finds is what that mean model scores, and misuse is refused."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mtrain.cli.renderers import Aligner
from mtrain.cli.tune import tune_command
from mtrain.config import TokenizerConfig
from mtrain.data.tokenizer import train_model
from mtrain.deploy.engines import open_engine
from mtrain.errors import MtrainError
from mtrain.evaluation.scores import corpus_scores
from mtrain.inference.ensemble import Ensemble
from mtrain.inference.translator import open_translator
from mtrain.run import checkpoint
from mtrain.special import BOS, EOS, PAD
from mtrain.training.session import train

from helpers import run_cli, tiny_config


@pytest.fixture(scope="module")
def members(demo_run):
    """Two checkpoints of one run that translate differently: the average, and the earliest kept."""
    return [demo_run / "checkpoint_avg.pt", checkpoint.numbered(demo_run)[0]]


@pytest.fixture(scope="module")
def sources(demo_run):
    return (demo_run / "data" / "valid.en.txt").read_text(encoding="utf-8").splitlines()[:30]


def mean_model_logprobs(models, src_ids: list[int], prefix: list[int]) -> torch.Tensor:
    """log(1/N sum_i p_i(. | prefix, src)) by full teacher-forced forward passes, no cache."""
    src = torch.tensor([src_ids + [EOS]])
    tgt_in = torch.tensor([[BOS] + prefix])
    with torch.no_grad():
        probs = [torch.softmax(m(src, tgt_in)[0, -1].float(), -1) for m in models]
    return torch.log(torch.stack(probs).mean(0))


def test_an_ensemble_of_one_model_twice_translates_as_that_model(members, sources):
    single, twice = open_translator(members[0], "cpu"), open_translator([members[0], members[0]], "cpu")
    assert isinstance(twice.model, Ensemble) and not isinstance(single.model, Ensemble)
    for beam, nbest in ((1, 1), (4, 4)):
        expected, found = single.translate_nbest(sources, beam, nbest), twice.translate_nbest(sources, beam, nbest)
        assert [[h.tokens for h in hyps] for hyps in found] == [[h.tokens for h in hyps] for hyps in expected]
        assert [h.score for hyps in found for h in hyps] == pytest.approx(
            [h.score for hyps in expected for h in hyps], abs=1e-4
        )


def test_greedy_ensemble_follows_the_mean_of_the_members_probabilities(members, sources):
    """Beam 1 in one batch (sentences end at different steps and leave it) against a step-by-step
    argmax of the members' mean probability computed from scratch at every step."""
    ensemble = open_translator(members, "cpu", beam=1)
    models, tokenizer = ensemble.model.members, ensemble.tokenizer
    found = ensemble.translate_nbest(sources, beam=1)
    singles = [open_translator(path, "cpu", beam=1).translate(sources) for path in members]
    assert singles[0] != singles[1]  # the members disagree, so the mean matters
    a, b, positions = ensemble.config.max_len_a, ensemble.config.max_len_b, models[0].config.max_positions
    for line, (hyp,) in zip(sources[:12], found):
        src_ids, prefix, logprob = tokenizer.encode_src([line])[0], [], 0.0
        limit = max(1, min(int(a * len(src_ids)) + b, positions - 1))  # the search's length limit: then only </s>
        while True:
            logp = mean_model_logprobs(models, src_ids, prefix)
            logp[PAD] = logp[BOS] = -math.inf
            token = EOS if len(prefix) + 1 >= limit else int(logp.argmax())
            logprob += float(logp[token])
            if token == EOS:
                break
            prefix.append(token)
        assert hyp.tokens == prefix
        assert hyp.logprob == pytest.approx(logprob, abs=1e-3)


def test_beam_ensemble_scores_are_the_mean_models_scores(members, sources):
    """Every n-best hypothesis's log-probability, accumulated through the members' caches as beams
    are reordered and sentences finish, equals the mean model's teacher-forced log-probability."""
    ensemble = open_translator(members, "cpu")
    models, tokenizer = ensemble.model.members, ensemble.tokenizer
    results = ensemble.translate_nbest(sources[:10], beam=4, nbest=4)
    for line, hyps in zip(sources[:10], results):
        src_ids = tokenizer.encode_src([line])[0]
        assert len(hyps) == 4
        for h in hyps:
            full = h.tokens + [EOS]
            expected = sum(float(mean_model_logprobs(models, src_ids, full[:t])[full[t]]) for t in range(len(full)))
            assert h.logprob == pytest.approx(expected, abs=1e-3)


def test_eval_bleu_and_tune_score_the_ensembles_translation(members, sources, tmp_path):
    src, ref = tmp_path / "valid.en", tmp_path / "valid.de"
    src.write_text("".join(line + "\n" for line in sources), encoding="utf-8")
    references = (members[0].parent / "data" / "valid.de.txt").read_text(encoding="utf-8").splitlines()[: len(sources)]
    ref.write_text("".join(line + "\n" for line in references), encoding="utf-8")
    hyps = open_translator(members, "cpu", beam=4, lenpen=0.6).translate(sources)
    expected = corpus_scores(hyps, [references])["bleu"]
    options = [arg for path in members for arg in ("--checkpoint", str(path))]

    # eval-bleu takes translate's decode options: the length penalty an ensemble was tuned to
    tuned_hyps = open_translator(members, "cpu", beam=4, lenpen=1.4).translate(sources)
    scored = run_cli(
        "eval-bleu", *options, "--src", str(src), "--ref", str(ref), "--beam", "4", "--lenpen", "1.4", "--json"
    )
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["bleu"] == pytest.approx(corpus_scores(tuned_hyps, [references])["bleu"], abs=1e-9)

    tuned = run_cli("tune", *options, "--src", str(src), "--ref", str(ref), "--beam", "4", "--lenpen", "0.6")
    assert tuned.returncode == 0, tuned.stderr
    (row,) = [line.split() for line in tuned.stdout.splitlines() if line[:4].strip().isdigit()]
    assert float(row[2]) == pytest.approx(expected, abs=0.006)


def test_a_run_trained_on_the_first_runs_sentencepiece_model_joins_its_ensemble(demo_run, members, tmp_path, sources):
    """What the vocabulary error advises works, and members may differ in shape."""
    other = tiny_config(tmp_path / "other", tokenizer={"model": str(demo_run / "data" / "spm.model")})
    train(other)
    ensemble = open_translator([members[0], tmp_path / "other" / "checkpoint_last.pt"], "cpu")
    assert [m.config.d_ff for m in ensemble.model.members] == [256, 128]
    assert len(ensemble.translate(sources)) == len(sources)


def test_checkpoints_of_another_direction_or_vocabulary_are_refused(demo_run, members, tmp_path):
    state = checkpoint.load(members[0])
    state["config"]["data"]["src_lang"], state["config"]["data"]["tgt_lang"] = "de", "en"
    reversed_path = tmp_path / "de-en.pt"
    checkpoint.save(state, reversed_path)
    result = run_cli("translate", "--checkpoint", str(members[0]), "--checkpoint", str(reversed_path), input="x\n")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {reversed_path} translates de->en but {members[0]} translates en->de; "
        "an ensemble's checkpoints must translate the same direction"
    )

    state = checkpoint.load(members[0])
    lines = (demo_run / "data" / "valid.en.txt").read_text(encoding="utf-8").splitlines()
    state["spm"]["src"] = train_model(lines, TokenizerConfig(vocab_size=120), seed=1)
    other_path = tmp_path / "other-vocabulary.pt"
    checkpoint.save(state, other_path)
    with pytest.raises(MtrainError, match="other sentencepiece models than .* must share one vocabulary"):
        open_translator([members[0], other_path], "cpu")


def test_what_an_ensemble_cannot_do_is_one_line_error(members):
    with pytest.raises(MtrainError, match="torch engine only; drop --engine ctranslate2"):
        open_engine(members, engine="ctranslate2")
    with pytest.raises(MtrainError, match="one model's cross-attention; give a single --checkpoint"):
        Aligner(open_engine(members, device="cpu"), 0)
    with pytest.raises(MtrainError, match="--write stores the setting in one checkpoint"):
        tune_command(members, translator_factory=lambda: None, beams="4", lenpens="0.6", write=True)
    assert open_engine(members[:1], device="cpu").model.__class__.__name__ == "Transformer"
