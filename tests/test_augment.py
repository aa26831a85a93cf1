"""Training-time augmentation (data.augment) and the text changes it shares with the robustness report:
each change does what its definition says, the draws hold their probabilities, depend on the seed
and the epoch, and a run without augmentation is the run it was before."""

from __future__ import annotations

import numpy as np
import pytest

from mtrain.config import AugmentConfig
from mtrain.config_io import from_dict
from mtrain.data import noise
from mtrain.data.augment import Augmenter, change_pair, training_text
from mtrain.data.prepare import fingerprint, prepare
from mtrain.data.store import IndexedArray, PreparedData, Split
from mtrain.data.tokenizer import with_case_counterparts, with_case_variants
from mtrain.errors import MtrainError
from tests.helpers import tiny_config

NO_CHANGE = dict.fromkeys(("upper", "title", "lower", "strip_punct", "typos"), False)


def test_case_changes_follow_their_definitions():
    assert noise.upper("Die Straße, 3 Hunde.") == "DIE STRASSE, 3 HUNDE."
    assert noise.lower("Ein NASA-Foto.") == "ein nasa-foto."
    # word-initial rule: first letter up, the rest of the word as it was (NASA, Hund stay)
    assert noise.title('der "große" Hund sieht NASA-Fotos, 3d-Bilder und o\'brien.') == (
        'Der "Große" Hund Sieht NASA-Fotos, 3d-Bilder Und O\'brien.'
    )
    assert noise.strip_final_punctuation('Er sagt: "Hallo!"  ') == 'Er sagt: "Hallo'
    assert noise.strip_final_punctuation("No punctuation") == "No punctuation"
    assert noise.strip_final_punctuation("...") == ""


def test_which_side_each_modifier_changes():
    rng = np.random.default_rng(0)
    source, target = "A dog runs on the grass.", "Ein Hund rennt auf dem Gras."
    assert change_pair(source, target, {**NO_CHANGE, "upper": True}, rng) == (source.upper(), target.upper())
    assert change_pair(source, target, {**NO_CHANGE, "title": True}, rng) == (
        "A Dog Runs On The Grass.",
        "Ein Hund Rennt Auf Dem Gras.",
    )
    assert change_pair(source, target, {**NO_CHANGE, "lower": True}, rng) == (source.lower(), target)
    assert change_pair(source, target, {**NO_CHANGE, "strip_punct": True}, rng) == (source[:-1], target[:-1])
    typo_source, typo_target = change_pair(source, target, {**NO_CHANGE, "typos": True}, rng)
    assert typo_target == target and typo_source != source
    assert change_pair(source, target, NO_CHANGE, rng) == (source, target)


def test_a_typo_is_one_character_edit_of_a_letter():
    rng = np.random.default_rng(3)
    kinds = set()
    for _ in range(400):
        word = "Strand"
        typed = noise.typo(word, rng)
        if len(typed) == len(word) + 1:
            kinds.add("double")
            assert any(typed[:i] + typed[i + 1 :] == word and typed[i] == typed[i - 1] for i in range(1, len(typed)))
        elif len(typed) == len(word) - 1:
            kinds.add("drop")
            assert any(word[:i] + word[i + 1 :] == typed for i in range(len(word)))
        else:
            diff = [i for i in range(len(word)) if word[i] != typed[i]]
            if len(diff) == 2:
                kinds.add("swap")
                i, j = diff
                assert j == i + 1 and (typed[i], typed[j]) == (word[j], word[i])
            else:
                kinds.add("neighbour")
                (i,) = diff
                assert typed[i].lower() in noise.KEYBOARD_NEIGHBOURS[word[i].lower()]
                assert typed[i].isupper() == word[i].isupper()
    assert kinds == set(noise.TYPO_KINDS)


def test_typos_never_touch_numbers_urls_or_addresses():
    rng = np.random.default_rng(1)
    untouchable = "3 https://example.com/pfad www.example.org anna@example.com 12:30 4x4 e.g. 1,000"
    for _ in range(50):
        assert noise.typos(untouchable, rng) == untouchable
    sentence = "Two dogs at 12:30 on https://example.com/x with 1,000 balls"
    for _ in range(50):
        changed = noise.typos(sentence, rng, share=1.0)
        before, after = sentence.split(" "), changed.split(" ")
        assert len(before) == len(after)
        for old, new in zip(before, after):
            assert old == new or noise.typo_eligible(old), (old, new)
        assert sum(old != new for old, new in zip(before, after)) >= 4  # every eligible word: share 1.0


def test_typos_hit_the_share_of_words_and_at_least_one():
    rng = np.random.default_rng(2)
    twenty = " ".join(["house"] * 20)
    changed = [sum(a != b for a, b in zip(twenty.split(), noise.typos(twenty, rng).split())) for _ in range(20)]
    assert set(changed) == {3}  # round(0.15 * 20)
    assert noise.typos("one word", rng) != "one word"  # round(0.3) = 0, but at least one


def test_inline_element_wraps_one_to_three_words():
    rng = np.random.default_rng(4)
    sizes = set()
    for _ in range(200):
        tagged = noise.inline_element("A dog runs on the grass.", rng)
        opening = next(o for o, c in noise.INLINE_ELEMENTS if tagged.count(o) == 1)
        closing = dict(noise.INLINE_ELEMENTS)[opening]
        inside = tagged.split(opening)[1].split(closing)[0]
        sizes.add(len(inside.split()))
        assert tagged.replace(opening, "").replace(closing, "") == "A dog runs on the grass."
        assert not inside.endswith(".")  # the final punctuation stays outside
    assert sizes == {1, 2, 3}


def _split(pairs: int, corpus: np.ndarray | None = None) -> Split:
    sequences = [[5, 6, 7]] * pairs
    side = IndexedArray.from_sequences(sequences, np.int32)
    return Split(side, side, corpus)


def test_probabilities_hold_over_10000_pairs_per_corpus_and_epoch():
    corpus = np.repeat([0, 1], 5000)
    settings = [AugmentConfig(upper=0.1, title=0.05, lower=0.2, typos=0.3, strip_punct=0.15), AugmentConfig()]
    augmenter = Augmenter(_split(10_000, corpus), None, settings, [None, None], seed=1)
    masks = augmenter.changes(epoch=1)
    for name in ("upper", "title", "lower", "typos", "strip_punct"):
        p, share = getattr(settings[0], name), masks[name][:5000].mean()
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / 5000), (name, share)
        assert not masks[name][5000:].any()  # the other corpus asked for none
    cases = masks["upper"].astype(int) + masks["title"] + masks["lower"]
    assert cases.max() == 1  # at most one case per pair
    again, next_epoch = augmenter.changes(epoch=1), augmenter.changes(epoch=2)
    other_seed = Augmenter(_split(10_000, corpus), None, settings, [None, None], seed=2).changes(epoch=1)
    assert all((again[n] == masks[n]).all() for n in masks)
    assert not (next_epoch["typos"] == masks["typos"]).all()
    assert not (other_seed["typos"] == masks["typos"]).all()


def test_the_epoch_split_holds_the_changed_text(tmp_path):
    augment = {"upper": 0.5, "typos": 0.2}
    data = prepare(tiny_config(tmp_path, data={"train": {"demo": 3000}, "augment": augment}))
    tokenizer, split = data.tokenizer(), data.split("train")
    augmenter = Augmenter(split, tokenizer, [AugmentConfig(**augment)], [None], seed=1)
    epoch = augmenter(3)
    masks = augmenter.changes(3)
    decode = lambda side, i: tokenizer.decode_src_batch([side[i].tolist()])[0]  # noqa: E731
    for i in range(200):
        before_src, after_src = decode(split.src, i), decode(epoch.src, i)
        before_tgt, after_tgt = tokenizer.decode_tgt(split.tgt[i].tolist()), tokenizer.decode_tgt(epoch.tgt[i].tolist())
        if masks["upper"][i]:
            assert after_tgt == before_tgt.upper()  # the vocabulary covers the upper-case letters (no ⁇)
            assert after_src == before_src.upper() or masks["typos"][i]
        else:
            assert after_tgt == before_tgt
            assert (after_src == before_src) != bool(masks["typos"][i])
    assert (augmenter(3).src.data == epoch.src.data).all()


def test_case_counterparts_complete_the_tokenizer_alphabet():
    lines = ["Fünf Straßen", "ein Auto"]
    extra = list(with_case_counterparts(lines))
    assert extra[:2] == lines
    assert set(extra[2].split()) == {"Ü", "N", "s", "T", "R", "E", "I", "U", "O"}  # ß's upper case SS: S is there
    assert list(with_case_counterparts(["ab AB"])) == ["ab AB"]  # nothing lacking: no extra line


def test_sentencepiece_sees_upper_and_title_cased_copies_in_the_augmented_shares():
    lines = [f"a dog runs to the house number {i}" for i in range(10_000)]
    extra = list(with_case_variants(lines, {"upper": 0.1, "title": 0.05}, seed=1))[10_000:]
    upper = [line for line in extra if line == line.upper()]
    title = [line for line in extra if line != line.upper()]
    assert len(upper) + len(title) == len(extra)
    assert abs(len(upper) - 1000) < 4 * np.sqrt(10_000 * 0.1 * 0.9) and abs(len(title) - 500) < 4 * np.sqrt(475)
    assert set(upper) <= {noise.upper(line) for line in lines} and set(title) <= {noise.title(line) for line in lines}
    assert extra == list(with_case_variants(lines, {"upper": 0.1, "title": 0.05}, seed=1))[10_000:]
    assert list(with_case_variants(lines, {"upper": 0.0, "title": 0.0}, seed=1)) == lines


def test_no_augmentation_trains_on_the_prepared_split(tmp_path):
    plain = tiny_config(tmp_path)
    assert training_text(plain, None, None) is None  # TrainBatches gets no per-epoch hook: the same batches
    augmented = tiny_config(tmp_path, data={"train": {"demo": 2000}, "augment": {"upper": 0.1, "typos": 0.1}})
    assert fingerprint(augmented) != fingerprint(plain)  # sentencepiece learns the letters' other cases
    other_typos = tiny_config(tmp_path, data={"train": {"demo": 2000}, "augment": {"upper": 0.1, "typos": 0.3}})
    assert fingerprint(other_typos) == fingerprint(augmented)
    other_upper = tiny_config(tmp_path, data={"train": {"demo": 2000}, "augment": {"upper": 0.3, "typos": 0.1}})
    assert fingerprint(other_upper) != fingerprint(augmented)  # sentencepiece trains on another share of UPPER copies
    typos_only = tiny_config(tmp_path, data={"train": {"demo": 2000}, "augment": {"typos": 0.1}})
    assert fingerprint(typos_only) == fingerprint(plain)  # case changes alone add the letters' other cases


@pytest.mark.parametrize(
    "values, message",
    [
        ({"augment": {"upper": 1.5}}, "data.augment.upper is the probability that a pair is changed: from 0 to 1"),
        ({"augment": {"typos": -0.1}}, "data.augment.typos is the probability"),
        ({"augment": {"title": "nan"}}, "data.augment.title is the probability"),
        ({"augment": {"upper": 0.5, "lower": 0.6}}, "upper \\+ title \\+ lower is 1.1, above 1"),
        ({"augment": {"uper": 0.1}}, "unknown key 'data.augment.uper'; did you mean 'data.augment.upper'"),
        ({"train": {"demo": 10, "augment": {"typo": 0.1}}}, "unknown key 'data.train\\[0\\].augment.typo'"),
        (
            {"valid": {"demo": 10, "augment": {"upper": 0.1}}},
            "data.valid: weight, tag, skip_filters, augment, src_lang and tgt_lang",
        ),
        ({"test": {"demo": 10, "augment": {}}}, "data.test: weight, tag, skip_filters, augment, src_lang and tgt_lang"),
    ],
)
def test_bad_augment_settings_are_one_line_errors(values, message):
    with pytest.raises(MtrainError, match=message) as error:
        from_dict({"data": {"train": {"demo": 10}, **values}})
    assert "\n" not in str(error.value)


def test_a_corpus_may_set_its_own_augmentation():
    config = from_dict({"data": {"train": [{"demo": 10}, {"demo": 5, "augment": {}}], "augment": {"upper": 0.1}}})
    assert config.data.train[0].augment is None and config.data.train[1].augment == AugmentConfig()


def test_robustness_variants_and_markup_scoring():
    from mtrain.evaluation.robustness import robustness_report, robustness_variants, tags_kept, without_markup

    sources, references = ["A dog runs on the grass.", "Two men stand at 12:30."], ["Ein Hund.", "Zwei Männer."]
    variants = robustness_variants(sources, references, seed=1)
    assert variants["upper"] == ([s.upper() for s in sources], [r.upper() for r in references])
    assert variants["lower"] == ([s.lower() for s in sources], references)  # the reference keeps its case
    assert variants["typos"][1] == references and variants["typos"][0] != sources
    assert variants == robustness_variants(sources, references, seed=1)
    assert [without_markup(s) for s in variants["tags"][0]] == sources
    assert tags_kept('a <a href="#">b</a> c', 'x <a href="#">y z</a>')
    assert not tags_kept('a <a href="#">b</a> c', 'x <a href="/">y</a>')  # another attribute
    assert not tags_kept("<b>a</b> <i>b</i>", "<i>b</i> <b>a</b>")  # another order
    assert not tags_kept("<b>a</b>", "<b>a")  # not closed
    assert not tags_kept("<b><i>a</i></b>", "<b><i>a</b></i>")  # not nested
    assert without_markup("<b>Fish &amp; chips</b>  now") == "Fish & chips now"

    copied = robustness_report(lambda lines: lines, sources, sources)
    assert set(copied) == {"clean", "upper", "title", "lower", "typos", "tags"}
    assert copied["clean"]["bleu"] == copied["upper"]["bleu"] == copied["tags"]["bleu"] == 100.0
    assert copied["tags"]["tags_kept"] == 100.0 and copied["typos"]["bleu"] < 100


def test_eval_robustness_on_the_demo_model(demo_run, tmp_path):
    import json

    from tests.helpers import run_cli

    data = demo_run / "data"
    src, ref = tmp_path / "test.en", tmp_path / "test.de"
    src.write_text("".join(line + "\n" for line in PreparedData(data).raw_text("test", "en")[:40]), encoding="utf-8")
    ref.write_text("".join(line + "\n" for line in PreparedData(data).raw_text("test", "de")[:40]), encoding="utf-8")
    ckpt = str(demo_run / "checkpoint_avg.pt")
    result = run_cli("eval-robustness", "--checkpoint", ckpt, "--src", str(src), "--ref", str(ref), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    bleu = json.loads(run_cli("eval-bleu", "--checkpoint", ckpt, "--src", str(src), "--ref", str(ref), "--json").stdout)
    assert report["clean"]["bleu"] == round(bleu["bleu"], 2) and report["clean"]["chrf"] == round(bleu["chrf"], 2)
    assert report["upper"]["bleu"] < report["clean"]["bleu"]  # the demo model never saw UPPER CASE
    assert 0 <= report["tags"]["tags_kept"] <= 100
    table = run_cli("eval-robustness", "--checkpoint", ckpt, "--src", str(src), "--ref", str(ref), "--format", "html")
    assert table.stdout.splitlines()[0].split()[:3] == ["variant", "BLEU", "chrF"]
    assert len(table.stdout.splitlines()) == 7
    tags = table.stdout.splitlines()[-1].split()  # with markup handling: every tag kept, the text as clean
    assert tags[0] == "tags" and tags[-1] == "100.0%" and tags[1] == f"{report['clean']['bleu']:.2f}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--src", "SRC", "--ref", "REF"], "give a model: --checkpoint CKPT or --model DIR"),
        (["--checkpoint", "C", "--src", "missing.en", "--ref", "REF"], "source file not found: missing.en"),
        (["--checkpoint", "C", "--src", "SRC", "--ref", "missing.de"], "reference file not found: missing.de"),
        (["--checkpoint", "C", "--src", "SRC", "--ref", "SHORT"], "line counts differ: the reference"),
        (["--checkpoint", "C", "--src", "SRC", "--ref", "REF", "--format", "xml"], "--format must be text or html"),
    ],
)
def test_eval_robustness_mistakes_are_one_line(tmp_path, args, message):
    from tests.helpers import run_cli

    (tmp_path / "s.en").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "r.de").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "short.de").write_text("a\n", encoding="utf-8")
    files = {"SRC": "s.en", "REF": "r.de", "SHORT": "short.de", "C": "none.pt"}
    args = [str(tmp_path / files[a]) if a in files else a for a in args]
    result = run_cli("eval-robustness", *args)
    assert result.returncode == 2
    assert message in result.stderr.replace(str(tmp_path) + "/", "") and result.stderr.count("\n") == 1
