"""Decoding and scoring: beam search correctness, translate / eval-bleu / average end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mtrain.config import ModelConfig
from mtrain.data.store import PreparedData
from mtrain.inference.search import beam_search, greedy_search
from mtrain.inference.translator import load_model, open_translator
from mtrain.run import checkpoint
from mtrain.special import BOS, EOS, PAD
from mtrain.training.session import train

from helpers import run_cli, tiny_config


@pytest.fixture(scope="module")
def demo(demo_run):
    model, tokenizer, _ = load_model(demo_run / "checkpoint_avg.pt", torch.device("cpu"))
    data = PreparedData(demo_run / "data")
    lines = data.raw_text("test", "en")[:40]
    ids = tokenizer.encode_src(lines)
    src = torch.full((len(ids), max(map(len, ids)) + 1), PAD)
    for i, seq in enumerate(ids):
        src[i, : len(seq)] = torch.tensor(seq)
        src[i, len(seq)] = EOS
    return model, tokenizer, src, data


def test_beam_one_equals_greedy(demo):
    model, _, src, _ = demo
    greedy = greedy_search(model, src)
    beam = beam_search(model, src, beam=1, lenpen=0.0)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam]
    assert [h.logprob for h in greedy] == pytest.approx([b[0].logprob for b in beam], abs=1e-4)


def teacher_forced_logprob(model, src_row, tokens):
    tgt_in = torch.tensor([[BOS] + tokens])
    tgt_out = torch.tensor([tokens + [EOS]])
    with torch.no_grad():
        logp = torch.log_softmax(model(src_row[None], tgt_in).float(), -1)
    return logp.gather(-1, tgt_out[..., None]).sum().item()


def test_incremental_decoding_scores_equal_full_recomputation(demo):
    model, _, src, _ = demo
    results = beam_search(model, src[:10], beam=4, lenpen=0.6, nbest=4)
    for row, hyps in enumerate(results):
        assert len(hyps) == 4
        for h in hyps:
            assert h.logprob == pytest.approx(
                teacher_forced_logprob(model, src[row][src[row] != PAD], h.tokens), abs=1e-3
            )


def test_a_batch_translates_like_each_sentence_alone(demo):
    model, _, src, _ = demo
    together = beam_search(model, src[:12], beam=4)
    for row in range(12):
        alone = beam_search(model, src[row][src[row] != PAD][None], beam=4)[0][0]
        assert alone.tokens == together[row][0].tokens
        assert alone.score == pytest.approx(together[row][0].score, abs=1e-4)


class ScriptedModel(torch.nn.Module):
    """A stand-in decoder with fixed next-token log-probabilities, by the last token: after <s>,
    'a' costs 0.1 and '</s>' `first_eos`; after 'a', '</s>' costs 0.9 and 'b' 0.3; after 'b',
    '</s>' costs 0.7. Everything else costs 20."""

    A, B = 4, 5

    def __init__(self, first_eos=5.0):
        super().__init__()
        self.config = ModelConfig(max_positions=64)
        self.decoder = [None]
        self.first_eos = first_eos

    def encode(self, src):
        return torch.zeros(src.size(0), src.size(1), 1), (src != PAD)[:, None, None, :]

    def cross_attention_memory(self, memory):
        return [(memory[:, None], memory[:, None])]

    def decode_step(self, tokens, memory_kv, src_mask, caches, step):
        logp, last = torch.full((tokens.size(0), 8), -20.0), tokens[:, -1]
        logp[last == BOS, self.A], logp[last == BOS, EOS] = -0.1, -self.first_eos
        logp[last == self.A, EOS], logp[last == self.A, self.B] = -0.9, -0.3
        logp[last == self.B, EOS] = -0.7
        return logp


@pytest.mark.parametrize("alpha, expected", [(0.0, [ScriptedModel.A]), (1.0, [ScriptedModel.A, ScriptedModel.B])])
def test_length_penalty_changes_the_choice_as_the_formula_says(alpha, expected):
    # 'a': score -1.0 / ((5 + 2) / 6) ** alpha; 'a b': -1.1 / ((5 + 3) / 6) ** alpha.
    # alpha 0: -1.1 < -1.0, the short one wins; alpha 1: -0.825 > -0.857, the long one wins.
    best = beam_search(ScriptedModel(), torch.tensor([[5, 6, EOS]]), beam=2, lenpen=alpha)[0][0]
    assert best.tokens == expected
    cost = 1.0 if len(expected) == 1 else 1.1
    assert best.score == pytest.approx(-cost / ((5 + len(expected) + 1) / 6) ** alpha)


def test_a_translation_is_never_empty_unless_its_length_limit_is_one():
    # </s> first would cost 0.01 and win every search (-0.01 against -1.0 at best), and the length
    # penalty would favour it more; only a limit of one token leaves nothing else.
    model, src = ScriptedModel(first_eos=0.01), torch.tensor([[5, 6, EOS]])
    assert greedy_search(model, src)[0].tokens == [ScriptedModel.A, ScriptedModel.B]
    for alpha in (0.0, 0.6, 2.0):
        assert beam_search(model, src, beam=2, lenpen=alpha)[0][0].tokens != []
    assert greedy_search(model, src, max_len_a=0.0, max_len_b=1)[0].tokens == []
    assert beam_search(model, src, beam=2, max_len_a=0.0, max_len_b=1)[0][0].tokens == []


def test_maximum_length_is_source_length_plus_b(demo):
    model, _, src, _ = demo
    for h in greedy_search(model, src[:5], max_len_a=0.0, max_len_b=3):
        assert len(h.tokens) <= 2  # 3 tokens at most, the last being </s>


def test_the_demo_model_translates_and_scores_end_to_end(demo_run, tmp_path):
    data = PreparedData(demo_run / "data")
    src, ref = tmp_path / "test.en", tmp_path / "test.de"
    src.write_text("\n".join(data.raw_text("test", "en")[:100]) + "\n")
    ref.write_text("\n".join(data.raw_text("test", "de")[:100]) + "\n")
    hyp = tmp_path / "hyp.de"
    ckpt = str(demo_run / "checkpoint_avg.pt")
    result = run_cli("translate", "--checkpoint", ckpt, "--input", str(src), "--output", str(hyp))
    assert result.returncode == 0, result.stderr
    assert len(hyp.read_text().splitlines()) == 100
    scored = run_cli("eval-bleu", "--hyp", str(hyp), "--ref", str(ref), "--json")
    assert json.loads(scored.stdout)["bleu"] >= 90
    direct = run_cli("eval-bleu", "--checkpoint", ckpt, "--src", str(src), "--ref", str(ref), "--json")
    assert json.loads(direct.stdout)["bleu"] == json.loads(scored.stdout)["bleu"]


def test_translate_streams_stdin_keeping_empty_lines(demo_run):
    lines = "The dog sees a cat.\n\nToday the small man buys two red apples.\n"
    result = run_cli("translate", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), input=lines)
    assert result.returncode == 0, result.stderr
    out = result.stdout.split("\n")
    assert out[:3] == ["Der Hund sieht eine Katze.", "", "Heute kauft der kleine Mann zwei rote Äpfel."]
    nbest = run_cli(
        "translate", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), "--nbest", "2", input="The dog sees a cat.\n"
    )
    first, second = nbest.stdout.splitlines()
    assert first.startswith("0 ||| Der Hund sieht eine Katze. ||| ") and second.startswith("0 ||| ")


def test_overlong_input_is_truncated_with_a_warning_not_dropped(demo_run):
    translator = open_translator(demo_run / "checkpoint_avg.pt", "cpu")
    long = " ".join(["The dog sees a cat."] * 60)
    out = translator.translate(["The dog sees a cat.", long])
    assert len(out) == 2 and out[0] == "Der Hund sieht eine Katze." and out[1]


def test_average_of_two_checkpoints_is_their_mean(tmp_path):
    train(tiny_config(tmp_path, train={"max_steps": 6, "save_every": 3}))
    a, b = checkpoint.load(tmp_path / "checkpoint_3.pt"), checkpoint.load(tmp_path / "checkpoint_6.pt")
    result = run_cli("average", str(tmp_path), "--last", "2", "--output", str(tmp_path / "avg.pt"))
    assert result.returncode == 0, result.stderr
    avg = checkpoint.load(tmp_path / "avg.pt")
    for key in a["model"]:
        torch.testing.assert_close(avg["model"][key], (a["model"][key] + b["model"][key]) / 2)
    other = tmp_path / "other"
    train(tiny_config(other, model={"d_ff": 96}, train={"max_steps": 3, "save_every": 3}))
    refused = run_cli(
        "average", str(tmp_path / "checkpoint_3.pt"), str(other / "checkpoint_3.pt"), "--output", str(tmp_path / "x.pt")
    )
    assert refused.returncode == 2 and "another model shape" in refused.stderr and not (tmp_path / "x.pt").exists()


HYPS = ["The cat sat on the mat.", "A quick brown fox jumps.", "Hello world, again!", "Nothing matches here"]
REFS = ["The cat sat on a mat.", "The quick brown fox jumps over.", "Hello world again!", "Something else entirely"]


def test_eval_bleu_equals_the_sacrebleu_command(tmp_path):
    hyp, ref = tmp_path / "hyp", tmp_path / "ref"
    hyp.write_text("\n".join(HYPS) + "\n")
    ref.write_text("\n".join(REFS) + "\n")
    ours = json.loads(run_cli("eval-bleu", "--hyp", str(hyp), "--ref", str(ref), "--json").stdout)

    def sacrebleu_cli(metric):
        out = subprocess.run(
            [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-m", metric, "-b", "-w", "4"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return float(out.strip())

    assert ours["bleu"] == pytest.approx(sacrebleu_cli("bleu"), abs=1e-4)
    assert ours["chrf"] == pytest.approx(sacrebleu_cli("chrf"), abs=1e-4)
    assert ours["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")


CJK = {
    "zh": ("我喜欢猫。", "我喜欢狗。", "tok:zh|"),
    "ja": ("猫が好きです。", "犬が好きです。", "tok:ja-mecab-"),
    "ko": ("나는 고양이를 좋아한다.", "나는 개를 좋아한다.", "tok:ko-mecab-"),
}


@pytest.mark.parametrize("language", CJK)
def test_chinese_japanese_and_korean_targets_get_sacrebleus_own_tokenizer(tmp_path, language, monkeypatch):
    """What `sacrebleu -l en-xx` scores: 13a would see each unspaced sentence as one word (BLEU 0 here)."""
    hypothesis, reference, tokenizer = CJK[language]
    hyp, ref = tmp_path / "hyp", tmp_path / "ref"
    hyp.write_text(hypothesis + "\n")
    ref.write_text(reference + "\n")
    ours = json.loads(
        run_cli("eval-bleu", "--hyp", str(hyp), "--ref", str(ref), "--json", "--tgt-lang", language).stdout
    )
    out = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-l", f"en-{language}", "-b", "-w", "4"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert ours["bleu"] == pytest.approx(float(out), abs=1e-4) and ours["bleu"] > 0
    assert tokenizer in ours["bleu_signature"]
    if language != "zh":  # MeCab missing: the extra to install, in one line
        monkeypatch.setitem(sys.modules, "MeCab" if language == "ja" else "mecab_ko", None)
        result = run_cli("eval-bleu", "--hyp", str(hyp), "--ref", str(ref), "--tgt-lang", language)
        assert result.returncode == 2 and "pip install 'mtrain[cjk]'" in result.stderr, result.stderr


def test_eval_bleu_tests_the_difference_to_a_baseline_with_sacrebleus_paired_bootstrap(tmp_path):
    """A system that fixes half of the baseline's mistakes on 200 sentences is significantly better;
    the baseline against itself differs by nothing (whatever sacreBLEU's p-value). The figures are sacreBLEU's own."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    refs = [f"{REFS[i % 4]} number {i}" for i in range(200)]
    baseline = [f"{HYPS[i % 4]} number {i}" for i in range(200)]
    better = [ref if i % 2 else hyp for i, (ref, hyp) in enumerate(zip(refs, baseline))]
    for name, lines in (("ref", refs), ("base", baseline), ("better", better)):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    score = lambda hyp, base: run_cli(
        "eval-bleu", "--hyp", str(tmp_path / hyp), "--baseline", str(tmp_path / base), "--ref", str(tmp_path / "ref")
    )
    result = score("better", "base")
    assert result.returncode == 0, result.stderr
    bleu = lambda lines: BLEU().corpus_score(lines, [refs]).score
    delta = bleu(better) - bleu(baseline)
    assert delta > 10
    assert f"  BLEU {bleu(better):.2f} vs {bleu(baseline):.2f}: {delta:+.2f} (p = 0.0010: significant at p < 0.05" in (
        result.stdout
    )
    _, expected = PairedTest(
        [("baseline", baseline), ("system", better)], {"bleu": BLEU()}, [refs], test_type="bs", n_samples=1000
    )()
    as_json = lambda hyp, base: json.loads(
        run_cli(
            "eval-bleu", "--hyp", str(tmp_path / hyp), "--baseline", str(tmp_path / base), "--ref",
            str(tmp_path / "ref"), "--json",
        ).stdout
    )  # fmt: skip
    report = as_json("better", "base")
    assert report["bleu_p_value"] == expected["BLEU"][1].p_value
    assert report["bleu_ci95"] == pytest.approx(expected["BLEU"][1].ci)
    same = as_json("base", "base")
    assert same["bleu_delta"] == same["chrf_delta"] == 0
    assert score("base", "base").stdout.count(": no difference at p < 0.05") == 2


def test_eval_bleu_mistakes(tmp_path):
    hyp, ref = tmp_path / "hyp", tmp_path / "ref"
    hyp.write_text("\n".join(HYPS) + "\n")
    ref.write_text("\n".join(REFS[:3]) + "\n")
    result = run_cli("eval-bleu", "--hyp", str(hyp), "--ref", str(ref))
    assert result.returncode == 2 and "has 3 lines but the translations have 4" in result.stderr
    assert "Traceback" not in result.stderr
    ref.write_text("\n".join(REFS) + "\n")
    missing = run_cli("eval-bleu", "--hyp", str(hyp), "--ref", str(ref), "--baseline", str(tmp_path / "none"))
    assert missing.returncode == 2 and missing.stderr == f"error: baseline file not found: {tmp_path / 'none'}\n"
    ref.with_name("short").write_text("one line\n")
    short = run_cli("eval-bleu", "--hyp", str(hyp), "--ref", str(ref), "--baseline", str(ref.with_name("short")))
    assert (
        short.returncode == 2
        and "the baseline " in short.stderr
        and "has 1 lines but the translations have 4" in (short.stderr)
    )
    missing = run_cli("translate", "--checkpoint", str(tmp_path / "none.pt"), input="x\n")
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr


BAD_TRANSLATE_OPTIONS = [
    (dict(beam=0), "decode.beam (--beam) must be from 1 to 1024, got 0"),
    (dict(lenpen=float("inf")), "decode.lenpen (--lenpen) must be a number from 0 to 10, got inf"),
    (dict(lenpen=-1.0), "decode.lenpen (--lenpen) must be a number from 0 to 10, got -1"),
    (dict(device="tpu"), "unknown device 'tpu'; use one of auto, cpu, cuda"),
    (dict(precision="fp8"), "--precision 'fp8' is not one of auto, fp32, bf16, fp16"),
    (dict(precision="fp16", device="cpu"), "--precision fp16 needs a CUDA device"),
    (dict(engine="onnx"), "--engine 'onnx' is not one of torch, ctranslate2"),
    (dict(threads=-1), "--threads must be from 0 (the default) to 1024, got -1"),
    (dict(threads=1024), "--threads 1024 is more than the"),
    (dict(sampling="top"), "decode.sampling (--sampling) must be topk or multinomial, got 'top'"),
    (dict(sampling="topk", topk=0), "decode.topk (--topk) must be >= 1"),
    (
        dict(sampling="multinomial", temperature=0.0),
        "decode.temperature (--temperature) must be a finite number >= 1e-06, got 0",
    ),
    (dict(sampling="topk", engine="ctranslate2"), "--sampling runs on mtrain's own engine"),
]


@pytest.mark.parametrize("options,message", BAD_TRANSLATE_OPTIONS, ids=[m for _, m in BAD_TRANSLATE_OPTIONS])
def test_bad_translate_options_are_refused_with_their_name(demo_run, options, message):
    from mtrain.deploy.engines import open_engine
    from mtrain.errors import MtrainError

    with pytest.raises(MtrainError) as error:
        open_engine(demo_run / "checkpoint_avg.pt", **options)
    assert message in str(error.value)


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_bf16_on_a_cpu_without_bf16_kernels_is_warned_about(monkeypatch, caplog, fast_bf16):
    """On a CPU without AVX-512 bf16 kernels torch multiplies bf16 in a reference GEMM (46x slower
    than fp32 in training on one AVX2 host): the user asked for speed and must hear that fp32 is faster there."""
    from mtrain import device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: fast_bf16)
    with caplog.at_level("WARNING", logger="mtrain"):
        assert device.resolve_precision(torch.device("cpu"), "bf16") == "bf16"
        assert device.resolve_precision(torch.device("cpu"), "fp32") == "fp32"
    warned = [r.getMessage() for r in caplog.records]
    if fast_bf16:
        assert warned == []
    else:
        assert len(warned) == 1 and warned[0].startswith("train.precision bf16: this CPU has no AVX-512 bf16")
        assert warned[0].endswith("use fp32 on this machine")


def test_bad_nbest_is_a_one_line_cli_error(demo_run):
    for nbest in ("5", "0"):
        result = run_cli(
            "translate",
            "--checkpoint",
            str(demo_run / "checkpoint_avg.pt"),
            "--nbest",
            nbest,
            input="The dog sees a cat.\n",
        )
        assert (
            result.returncode == 2
            and result.stderr == f"error: --nbest must be between 1 and the beam (4), got {nbest}\n"
        )


def test_translate_refuses_a_directory_as_output(demo_run, tmp_path):
    src = tmp_path / "in.en"
    src.write_text("The dog sees a cat.\n")
    result = run_cli(
        "translate", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), "--input", str(src), "--output", str(tmp_path)
    )
    assert result.returncode == 2 and "is a directory; give a file name" in result.stderr


def test_average_refuses_a_bad_count_and_a_directory_as_output(demo_run, tmp_path):
    for last in ("0", "-2"):
        result = run_cli("average", str(demo_run), "--last", last, "--output", str(tmp_path / "avg.pt"))
        assert result.returncode == 2 and result.stderr == f"error: --last must be >= 1, got {last}\n"
    result = run_cli("average", str(demo_run), "--output", str(tmp_path))
    assert result.returncode == 2 and "is a directory; give a file name" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_eval_bleu_of_empty_files_is_a_one_line_error(tmp_path):
    (tmp_path / "hyp").write_text("")
    (tmp_path / "ref").write_text("")
    result = run_cli("eval-bleu", "--hyp", str(tmp_path / "hyp"), "--ref", str(tmp_path / "ref"))
    assert (
        result.returncode == 2
        and result.stderr == "error: there is nothing to score: the translations are empty (0 lines)\n"
    )


def test_sampling_is_reproducible_line_by_line_and_top_1_is_greedy(demo_run, demo):
    from mtrain.deploy.engines import open_engine

    lines = demo[3].raw_text("test", "en")[:24]
    sample = lambda **o: open_engine(demo_run / "checkpoint_avg.pt", sampling="topk", **o)
    first = sample(topk=10, seed=3).translate(lines)
    assert sample(topk=10, seed=3).translate(lines) == first
    assert sample(topk=10, seed=4).translate(lines) != first
    # a line's draws depend on (seed, its line number) only, not on the lines batched with it
    alone = sample(topk=10, seed=3, max_tokens=1)
    assert [alone.translate_nbest([line], first_line=i)[0][0].tokens for i, line in enumerate(lines)] == [
        h[0].tokens for h in sample(topk=10, seed=3).translate_nbest(lines)
    ]
    greedy = open_engine(demo_run / "checkpoint_avg.pt", beam=1).translate_nbest(lines)
    top1 = sample(topk=1, seed=9).translate_nbest(lines)
    assert [h[0].tokens for h in top1] == [h[0].tokens for h in greedy]
    assert [h[0].logprob for h in top1] == pytest.approx([h[0].logprob for h in greedy], abs=1e-4)
    tempered = open_engine(demo_run / "checkpoint_avg.pt", sampling="multinomial", temperature=1e-4, seed=2)
    assert tempered.translate(lines) == open_engine(demo_run / "checkpoint_avg.pt", beam=1).translate(lines)


def test_sampling_with_nbest_is_a_one_line_cli_error(demo_run):
    result = run_cli(
        "translate",
        "--checkpoint",
        str(demo_run / "checkpoint_avg.pt"),
        "--sampling",
        "topk",
        "--nbest",
        "2",
        input="The dog sees a cat.\n",
    )
    assert (
        result.returncode == 2
        and result.stderr == "error: --sampling draws one translation per line; leave out --nbest\n"
    )
