"""Glossaries and the constrained beam search: against exhaustive search on a scripted model, every
finished hypothesis with its terms, no glossary = today's output, the glossary file's mistakes, and
the command line and server that take one."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch

from mtrain.data.glossary import Term, glossary_from_pairs, read_glossary
from mtrain.data.store import PreparedData
from mtrain.data.terms import annotate_pair, annotated
from mtrain.deploy.engines import open_engine
from mtrain.errors import MtrainError
from mtrain.inference.constrained import constrained_beam_search
from mtrain.inference.search import beam_search, length_penalty
from mtrain.inference.terminology import translate_with_glossary
from mtrain.special import EOS

from helpers import PRODUCIBLE, Scripted, random_probabilities, run_cli


def holds(sequence: list[int], constraints: list[list[int]]) -> bool:
    """Whether the constraints occur in `sequence` at disjoint places (brute force)."""
    if not constraints:
        return True
    first, rest = constraints[0], constraints[1:]
    for start in range(len(sequence) - len(first) + 1):
        if sequence[start : start + len(first)] == first:
            masked = sequence[:start] + [-1] + sequence[start + len(first) :]
            if holds(masked, rest):
                return True
    return False


def exhaustive(probabilities, max_len: int, lenpen: float, constraints: list[list[int]]) -> list[tuple[float, list]]:
    found = []
    for length in range(max_len):
        for words in itertools.product(PRODUCIBLE, repeat=length):
            if not holds(list(words), constraints):
                continue
            sequence = list(words) + [EOS]
            logprob = sum(math.log(probabilities(tuple(sequence[:i]))[t]) for i, t in enumerate(sequence))
            found.append((logprob / length_penalty(len(sequence), lenpen), list(words)))
    return sorted(found, key=lambda f: -f[0])


SOURCE = torch.tensor([[4, EOS]])

CONSTRAINTS = {
    "one token": [[5]],
    "a multi-piece term": [[4, 5]],
    "two terms": [[5], [1]],
    "two overlapping terms": [[4, 5], [5, 1]],
    "terms sharing their first token": [[4, 5], [4, 1]],
}


@pytest.mark.parametrize("name", CONSTRAINTS)
def test_a_wide_enough_constrained_beam_finds_the_best_outputs_with_the_terms(name):
    constraints = CONSTRAINTS[name]
    expected = exhaustive(random_probabilities, 5, 0.6, constraints)[:3]
    assert expected  # the terms fit: the comparison is not trivially empty
    found = constrained_beam_search(
        Scripted(random_probabilities), SOURCE, [constraints], beam=256, lenpen=0.6, max_len_a=0, max_len_b=5, nbest=3
    )[0]
    assert [h.tokens for h in found] == [tokens for _, tokens in expected]
    assert [h.score for h in found] == pytest.approx([score for score, _ in expected], rel=1e-5)
    for h in found:
        assert sum(h.token_logprobs) == pytest.approx(h.logprob, abs=1e-5)


def test_a_length_penalty_above_one_searches_as_one():
    # above 1 a long enough hypothesis always wins: the exhaustive best at 2.0 is longer than at 1.0
    at_two, at_one = (exhaustive(random_probabilities, 6, lenpen, [[5]])[:3] for lenpen in (2.0, 1.0))
    assert len(at_two[0][1]) > len(at_one[0][1])
    found = constrained_beam_search(
        Scripted(random_probabilities), SOURCE, [[[5]]], beam=256, lenpen=2.0, max_len_a=0, max_len_b=6, nbest=3
    )[0]
    assert [h.tokens for h in found] == [tokens for _, tokens in at_one]


def scripted(table: dict[tuple, dict[int, float]]):
    """Next-token probabilities from a table (prefix -> {token: p}); unlisted prefixes end at once."""

    def probabilities(prefix):
        row = [1e-6] * 6
        for token, p in table.get(prefix, {EOS: 1.0}).items():
            row[token] = p
        return [p / sum(row) for p in row]

    return probabilities


# Unconstrained, the model says "4 4 </s>" in both; 5 is unlikely, and best in the middle of the first
# (4 5: 0.09 beside 4 4 5: 0.072 and 5: 0.02), at the end of the second (4 4 5: 0.405).
TABLES = {
    "in the middle": ({(): {4: 0.9, 5: 0.02, 1: 0.08}, (4,): {4: 0.8, 5: 0.1, EOS: 0.1}, (4, 4): {EOS: 0.9, 5: 0.1}},
                      [4, 5]),
    "at the end": ({(): {4: 0.9, 5: 0.01, 1: 0.09}, (4,): {4: 0.9, 5: 0.01, EOS: 0.09}, (4, 4): {EOS: 0.5, 5: 0.5}},
                   [4, 4, 5]),
}  # fmt: skip


@pytest.mark.parametrize("beam", [1, 2, 4])
@pytest.mark.parametrize("where", TABLES)
def test_the_term_lands_where_the_model_likes_it_best_and_every_hypothesis_has_it(where, beam):
    table, best = TABLES[where]
    model = Scripted(scripted(table))
    assert beam_search(model, SOURCE, beam=beam, lenpen=0.0, max_len_a=0, max_len_b=6)[0][0].tokens == [4, 4]
    found = constrained_beam_search(model, SOURCE, [[[5]]], beam, 0.0, 0, 6, nbest=beam)[0]
    assert found and all(5 in h.tokens for h in found)
    if beam > 1:  # beam 1 takes a term as soon as it can: one hypothesis has no room to wait
        assert found[0].tokens == best


def test_a_term_stays_a_whole_word_and_a_met_term_lets_the_sentence_end():
    # after 5 the model wants 1, a piece that continues the word: "Hund" would become "Hunde"
    table = {
        (): {4: 0.9, 5: 0.1},
        (4,): {5: 0.3, 4: 0.3, EOS: 0.4},
        (4, 5): {1: 0.9, EOS: 0.1},
        (5,): {1: 0.9, EOS: 0.1},
    }
    model, continues = Scripted(scripted(table)), torch.tensor([False, True, False, False, False, False])
    free = constrained_beam_search(model, SOURCE, [[[5]]], 4, 0.0, 0, 6, nbest=4)[0]
    whole = constrained_beam_search(model, SOURCE, [[[5]]], 4, 0.0, 0, 6, nbest=4, continues_word=continues)[0]
    assert any(h.tokens[h.tokens.index(5) + 1 : h.tokens.index(5) + 2] == [1] for h in free)
    assert whole and all(h.tokens[h.tokens.index(5) + 1 : h.tokens.index(5) + 2] != [1] for h in whole)
    assert whole[0].tokens == [4, 5]  # ended right after the term, where the model likes to end best


def test_terms_longer_than_the_length_limit_give_no_hypothesis():
    found = constrained_beam_search(Scripted(random_probabilities), SOURCE, [[[5, 5, 5]]], 4, 0.6, 0, 3)
    assert found == [[]]


def test_no_constraints_choose_what_beam_search_chooses():
    model = Scripted(random_probabilities)
    plain = beam_search(model, SOURCE, beam=4, lenpen=0.6, max_len_a=0, max_len_b=5, nbest=4)[0]
    found = constrained_beam_search(model, SOURCE, [[]], 4, 0.6, 0, 5, nbest=4)[0]
    assert [h.tokens for h in found] == [h.tokens for h in plain]


# ----------------------------------------------------------------------------- glossaries
def test_a_glossary_matches_whole_words_ignoring_case_longest_first():
    glossary = glossary_from_pairs([("dog", "Köter"), ("big dog", "Riesenhund"), ("cat", "Mieze")], ["a", "b", "c"])
    assert glossary.applicable("A BIG dog sees a dog.") == [Term("big dog", "Riesenhund"), Term("dog", "Köter")]
    assert glossary.applicable("dogs and a hotdog") == []
    assert glossary.applicable("the Cat") == [Term("cat", "Mieze")]
    sensitive = glossary_from_pairs([("Cat", "Mieze")], ["a"], case_sensitive=True)
    assert sensitive.applicable("the cat") == [] and len(sensitive.applicable("the Cat")) == 1


def test_glossary_file_mistakes_are_one_line_errors_naming_the_line(tmp_path):
    path = tmp_path / "g.tsv"
    cases = {
        "# terms\ndog\tHund\ncat Katze\n": f"line 3 of {path} has no tab",
        "dog\tHund\n\t Katze\n": f"line 2 of {path}: the source term is empty",
        "dog\t \n": f"line 1 of {path}: the target term is empty",
        "dog\tHund\nDog\tKöter\n": f"line 2 of {path}: 'Dog' is already given as 'Hund' on line 1 of {path}",
        "dog\tHund\tx\n": f"line 1 of {path} has 2 tabs",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(MtrainError, match="^" + message.replace("(", r"\(")):
            read_glossary(path)
    path.write_text("# a comment\n\ndog\tHund\ndog\tHund\n")
    assert read_glossary(path).terms == [Term("dog", "Hund")]  # the same pair twice is one term
    with pytest.raises(MtrainError, match="glossary file not found"):
        read_glossary(tmp_path / "missing.tsv")


# ----------------------------------------------------------------------------- on the demo model
@pytest.fixture(scope="module")
def demo(demo_run):
    lines = PreparedData(demo_run / "data").raw_text("test", "en")[:40]
    return demo_run / "checkpoint_avg.pt", lines, open_engine(demo_run / "checkpoint_avg.pt", device="cpu")


def test_no_glossary_and_inapplicable_terms_leave_the_output_exactly_as_it_was(demo):
    _, lines, engine = demo
    for beam, nbest in ((4, 1), (4, 3), (1, 1)):
        plain = engine.translate_nbest(lines, beam=beam, nbest=nbest)
        for glossary in (glossary_from_pairs([], []), glossary_from_pairs([("zebra", "Zebra")], ["a"])):
            found = translate_with_glossary(engine, lines, glossary, beam, nbest).results
            assert [[(h.tokens, h.score) for h in hyps] for hyps in found] == [
                [(h.tokens, h.score) for h in hyps] for hyps in plain
            ]


def test_every_translation_with_an_applicable_term_contains_it(demo):
    _, lines, engine = demo
    glossary = glossary_from_pairs([("dog", "Katze"), ("cat", "Hund")], ["a", "b"])
    found = translate_with_glossary(engine, lines, glossary, beam=4, nbest=2).results
    plain = engine.translate(lines)
    changed = 0
    for line, hyps, before in zip(lines, found, plain):
        terms = glossary.applicable(line)
        for h in hyps:
            words = engine.tokenizer.decode_tgt(h.tokens).split()
            assert all(t.target in " ".join(words) for t in terms), (line, words)
        changed += bool(terms) and engine.tokenizer.decode_tgt(hyps[0].tokens) != before
        if not terms:
            assert engine.tokenizer.decode_tgt(hyps[0].tokens) == before
    assert changed >= 1


def test_translate_with_a_glossary_and_its_mistakes(demo, tmp_path, monkeypatch):
    checkpoint, lines, engine = demo
    source, glossary = tmp_path / "in.en", tmp_path / "g.tsv"
    source.write_text("\n".join(lines[:10]) + "\n")
    glossary.write_text("dog\tKatze\n")
    result = run_cli("translate", "--checkpoint", str(checkpoint), "-i", str(source), "--glossary", str(glossary))
    assert result.returncode == 0, result.stderr
    expected = translate_with_glossary(engine, lines[:10], read_glossary(glossary))
    assert result.stdout.splitlines() == [engine.tokenizer.decode_tgt(h[0].tokens) for h in expected.results]
    monkeypatch.setenv("MTRAIN_CACHE", str(tmp_path / "cache"))
    for options, message in (
        (["--engine", "ctranslate2"], "--glossary constrains mtrain's own beam search, which CTranslate2 does not run"),
        (["--sampling", "topk"], "--glossary constrains the beam search; leave out --sampling"),
        (["--format", "html"], "leave out --nbest, --alignment, --scores and --glossary"),
    ):
        result = run_cli("translate", "--checkpoint", str(checkpoint), "-i", str(source), "--glossary",
                         str(glossary), *options)  # fmt: skip
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_the_server_takes_a_glossary_and_refuses_a_bad_one_for_that_request_only(demo, monkeypatch):
    pytest.importorskip("fastapi")
    import time

    from fastapi.testclient import TestClient

    from mtrain.deploy.serve.app import create_app
    from mtrain.deploy.serve.worker import ServeLimits

    checkpoint, lines, engine = demo
    line = next(line for line in lines if "dog" in line.lower())
    # soft terms in place of their words (decode.soft_terms: replace), as a model trained with term_mask 1 says
    app = create_app(lambda: open_engine(checkpoint, device="cpu", soft_terms="replace"), ServeLimits())
    with TestClient(app) as client:
        deadline = time.time() + 60
        while client.get("/health").status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        answer = client.post("/translate", json={"text": [line, "a cat"], "glossary": [["dog", "Katze"]]})
        expected = translate_with_glossary(engine, [line, "a cat"], glossary_from_pairs([("dog", "Katze")], ["a"]))
        assert answer.json()["translations"] == [engine.tokenizer.decode_tgt(h[0].tokens) for h in expected.results]
        monkeypatch.setattr("mtrain.inference.terminology.check_soft_terms", lambda tokenizer: None)  # demo: no <t>
        soft = client.post("/translate", json={"text": [line], "glossary": [["dog", "Katze"]], "terminology": "soft"})
        annotated = glossary_from_pairs([("dog", "Katze")], ["a"]).annotate(line, "replace")
        assert "<t> Katze </t>" in annotated and soft.json()["translations"] == engine.translate([annotated])
        for glossary, message in (
            ([["dog"]], "glossary.0"),
            ([["dog", " "]], "glossary.0: the target term is empty"),
            ([["dog", "Hund"], ["Dog", "Köter"]], "glossary.1: 'Dog' is already given as 'Hund' on glossary.0"),
        ):
            response = client.post("/translate", json={"text": [line], "glossary": glossary})
            assert response.status_code == 422 and message in response.json()["error"], response.json()
        assert client.post("/translate", json={"text": [line]}).json()["translations"] == engine.translate([line])


# ----------------------------------------------------------------------------- soft terms
def test_an_annotation_follows_its_word_and_keeps_the_punctuation_after():
    assert annotated("dog.", "Hund") == "dog <t> Hund </t>."
    assert annotated('"dog",', "Hund") == '"dog <t> Hund </t>",'
    assert annotated('"dog",', "Hund", masked=True) == '"<t> Hund </t>",'  # term_mask: the word left out


def test_a_training_pair_gets_aligned_words_annotated_the_many_piece_ones_more_often():
    source, target = "A big firetruck runs.", "Ein großes Feuerwehrauto fährt."
    source_pieces = ["▁A", "▁big", "▁fire", "truck", "▁runs", "."]
    target_pieces = ["▁Ein", "▁großes", "▁Feuer", "wehr", "auto", "▁fährt", "."]
    links = np.array([(0, 0), (1, 1), (2, 2), (3, 3), (3, 4), (4, 5), (5, 6)]).reshape(-1)
    found = {annotate_pair(source, target, source_pieces, target_pieces, links, np.random.default_rng(s))
             for s in range(40)}  # fmt: skip
    assert found == {  # "A" is too short; a word's pieces and the target word's pieces count as one word
        "A big <t> großes </t> firetruck runs.",
        "A big firetruck <t> Feuerwehrauto </t> runs.",
        "A big firetruck runs <t> fährt </t>.",
    }
    masked = {annotate_pair(source, target, source_pieces, target_pieces, links, np.random.default_rng(s), mask=1.0)
              for s in range(40)}  # fmt: skip
    assert masked == {
        "A <t> großes </t> firetruck runs.",
        "A big <t> Feuerwehrauto </t> runs.",
        "A big firetruck <t> fährt </t>.",
    }
    halves = [annotate_pair(source, target, source_pieces, target_pieces, links, np.random.default_rng(s), mask=0.5)
              for s in range(400)]  # fmt: skip
    assert 150 < sum(h in masked for h in halves) < 250 and all(h in found | masked for h in halves)
    drawn = [annotate_pair(source, target, source_pieces, target_pieces, links, np.random.default_rng(s))
             for s in range(600)]  # fmt: skip
    # each word drawn in proportion to its target pieces: Feuerwehrauto 3 of 5, großes and fährt 1 of 5 each
    assert 300 < sum("Feuerwehrauto" in d for d in drawn) < 420 and 80 < sum("großes" in d for d in drawn) < 160
    pairs = {annotate_pair(source, target, source_pieces, target_pieces, links, np.random.default_rng(s), count=2)
             for s in range(40)}  # fmt: skip
    assert pairs == {  # two different words, each with its own term
        "A big <t> großes </t> firetruck <t> Feuerwehrauto </t> runs.",
        "A big <t> großes </t> firetruck runs <t> fährt </t>.",
        "A big firetruck <t> Feuerwehrauto </t> runs <t> fährt </t>.",
    }
    every = annotate_pair(source, target, source_pieces, target_pieces, links, np.random.default_rng(0), 1.0, 5)
    assert every == "A <t> großes </t> <t> Feuerwehrauto </t> <t> fährt </t>."  # more asked than there are: all
    scattered = np.array([(2, 0), (2, 5)]).reshape(-1)  # linked to words that are not adjacent: no term
    assert annotate_pair(source, target, source_pieces, target_pieces, scattered, np.random.default_rng(0)) == source
    nothing = np.zeros(0, np.int64)
    assert annotate_pair(source, target, source_pieces, target_pieces, nothing, np.random.default_rng(0)) == source


def test_the_glossary_writes_soft_terms_as_training_does():
    glossary = glossary_from_pairs([("dog", "Hund"), ("big dog", "großer Hund")], ["a", "b"])
    assert glossary.annotate("A dog and a big dog.") == "A dog <t> Hund </t> and a big dog <t> großer Hund </t>."
    assert glossary.annotate("No match here.") == "No match here."
    assert glossary.annotate("Dog and a big dog.", "replace") == "<t> Hund </t> and a <t> großer Hund </t>."
    assert glossary.annotate("No match here.", "replace") == "No match here."


def test_training_with_terms_writes_aligned_targets_into_the_epochs_sources(tmp_path):
    from mtrain.config import AugmentConfig
    from mtrain.data.augment import Augmenter
    from mtrain.data.prepare import prepare

    from helpers import tiny_config

    data = prepare(tiny_config(tmp_path, data={"train": {"demo": 800}, "alignments": "eflomal",
                                               "augment": {"terms": 0.5}}))  # fmt: skip
    tokenizer, split = data.tokenizer(), data.split("train")
    markers = [tokenizer.tag_id("<t>"), tokenizer.tag_id("</t>")]  # pieces of their own
    augmenter = Augmenter(split, tokenizer, [AugmentConfig(terms=0.5)], [None], seed=1)
    epoch, masks = augmenter(1), augmenter.changes(1)
    annotated_rows = 0
    for i in range(300):
        before = tokenizer.decode_src_batch([split.src[i].tolist()])[0]
        after = tokenizer.decode_src_batch([epoch.src[i].tolist()])[0]
        assert (epoch.tgt[i] == split.tgt[i]).all()  # the target never changes
        if not masks["terms"][i] or after == before:
            assert after == before
            continue
        term = after.split("<t> ")[1].split(" </t>")[0]
        assert after.replace(f" <t> {term} </t>", "") == before
        assert term in tokenizer.decode_tgt(split.tgt[i].tolist())
        assert all(m in epoch.src[i].tolist() for m in markers)
        annotated_rows += 1
    assert annotated_rows > 100
    masking = Augmenter(split, tokenizer, [AugmentConfig(terms=0.5, term_mask=1.0)], [None], seed=1)(1)
    letters = lambda text: sum(c.isalpha() for c in text)  # noqa: E731
    masked_rows = 0
    for i in range(300):  # an annotation without its word: the source lost a word of 3 letters or more
        before = tokenizer.decode_src_batch([split.src[i].tolist()])[0]
        after = tokenizer.decode_src_batch([masking.src[i].tolist()])[0]
        stripped = re.sub(r" ?<t> .*? </t>", "", after)
        assert stripped == after == before or letters(before) - letters(stripped) >= 3
        masked_rows += stripped != after
    assert masked_rows > 100
    doubled = Augmenter(split, tokenizer, [AugmentConfig(terms=0.5, terms_per_pair=2)], [None], seed=1)(1)
    counts = [tokenizer.decode_src_batch([doubled.src[i].tolist()])[0].count("<t> ") for i in range(300)]
    assert max(counts) == 2 and sum(c == 2 for c in counts) > 50  # most annotated pairs have two qualifying words
    with pytest.raises(MtrainError, match="data.augment.terms annotates the words an aligner links"):
        tiny_config(tmp_path, data={"train": {"demo": 10}, "augment": {"terms": 0.1}})
    for augment, message in (
        ({"term_mask": 0.5}, r"data.augment.term_mask hides annotated words: set data.augment.terms above 0 too"),
        ({"terms": 0.1, "term_mask": 1.5}, r"data.augment.term_mask is the share of term annotations without"),
        ({"terms": 0.1, "terms_per_pair": 0}, r"data.augment.terms_per_pair is how many words of a pair get a term"),
        ({"terms": 0.1, "term_mask": 1.0}, r"the model only learns terms written in place of .*decode.soft_terms: r"),
    ):
        with pytest.raises(MtrainError, match=message):
            tiny_config(tmp_path, data={"train": {"demo": 10}, "alignments": "eflomal", "augment": augment})
    masked_only = {"train": {"demo": 10}, "alignments": "eflomal", "augment": {"terms": 0.1, "term_mask": 1.0}}
    assert tiny_config(tmp_path, data=masked_only, decode={"soft_terms": "replace"}).decode.soft_terms == "replace"
    with pytest.raises(MtrainError, match="decode.soft_terms must be after or replace .*got 'instead'"):
        tiny_config(tmp_path, decode={"soft_terms": "instead"})


def test_soft_terms_need_a_model_trained_for_them(demo_run, tmp_path):
    source, glossary = tmp_path / "in.en", tmp_path / "g.tsv"
    source.write_text("a dog\n")
    glossary.write_text("dog\tKatze\n")
    checkpoint = str(demo_run / "checkpoint_avg.pt")
    for options, message in (
        (["--glossary", str(glossary), "--terminology", "soft"], "--terminology soft needs a model trained with"),
        (["--glossary", str(glossary), "--terminology", "firm"], "--terminology must be one of hard, soft"),
        (["--terminology", "soft"], "--terminology says how the terms of --glossary apply; add --glossary FILE"),
    ):
        result = run_cli("translate", "--checkpoint", checkpoint, "-i", str(source), *options)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_soft_terms_translate_the_annotated_source_with_either_engine(demo, tmp_path, monkeypatch):
    from mtrain.run import checkpoint as checkpoints

    checkpoint, lines, engine = demo
    monkeypatch.setattr("mtrain.inference.terminology.check_soft_terms", lambda tokenizer: None)  # the demo has no <t>
    monkeypatch.setenv("MTRAIN_CACHE", str(tmp_path / "cache"))
    state = checkpoints.load(checkpoint)
    state["config"]["decode"]["soft_terms"] = "replace"  # as a model trained with term_mask 1 stores it
    replacing = tmp_path / "replacing.pt"
    checkpoints.save(state, replacing)
    source, glossary = tmp_path / "in.en", tmp_path / "g.tsv"
    source.write_text("\n".join(lines[:8]) + "\n")
    glossary.write_text("dog\tKatze\n")
    # the form travels with the model: the torch engine reads the checkpoint, CTranslate2 its export
    for model, engine_name, form in ((checkpoint, "torch", "after"), (replacing, "torch", "replace"),
                                      (replacing, "ctranslate2", "replace")):  # fmt: skip
        annotated_lines = [read_glossary(glossary).annotate(line, form) for line in lines[:8]]
        assert any("<t> Katze </t>" in line for line in annotated_lines)
        assert any("dog <t>" in line for line in annotated_lines) == (form == "after")
        annotated_file = tmp_path / "annotated.en"
        annotated_file.write_text("\n".join(annotated_lines) + "\n")
        options = ["--checkpoint", str(model), "--engine", engine_name, "--quantization", "float32"][
            : 4 if engine_name == "torch" else 6
        ]
        soft = run_cli("translate", *options, "-i", str(source), "--glossary", str(glossary), "--terminology", "soft")
        assert soft.returncode == 0, soft.stderr
        plain = run_cli("translate", *options, "-i", str(annotated_file))
        assert soft.stdout == plain.stdout
