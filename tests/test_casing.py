"""Case tags (tokenizer.case_tags): which sentences count as UPPER CASE or Title Case, how the model
reads them (tag + sentence case) and writes them (tag + translation, re-cased on decoding), and how
augmentation teaches the tags."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mtrain.config import AugmentConfig, DecodeConfig
from mtrain.config_io import from_dict
from mtrain.data import noise
from mtrain.data.augment import Augmenter, change_pair
from mtrain.data.casing import recased, sentence_case_of, sentence_cased
from mtrain.data.prepare import prepare
from mtrain.errors import MtrainError
from mtrain.inference.translator import encode_sources
from mtrain.special import TITLE_TAG, UPPER_TAG
from tests.helpers import tiny_config

NO_CHANGE = dict.fromkeys(("upper", "title", "lower", "strip_punct", "typos"), False)


@pytest.mark.parametrize(
    "line, case",
    [
        ("A MAN IN A BLUE SHIRT.", "upper"),
        ("ZWEI MÄNNER, 3 HUNDE!", "upper"),
        ("A Man In A Blue Shirt.", "title"),
        ('"A Man" In 3 Blue Shirts.', "title"),  # leading punctuation and numbers as noise.title treats them
        ("A man in a blue shirt.", None),
        ("a man in a blue shirt", None),
        ("NASA and ESA launch a probe.", None),  # acronyms in a sentence-cased line
        ("USA", None),  # one word: an acronym or a name
        ("New York", None),  # two words: a name
        ("一个穿蓝衬衫的男人。", None),  # no cased letters
        ("", None),
    ],
)
def test_the_case_of_a_sentence(line, case):
    assert sentence_case_of(line) == case


def test_every_upper_and_title_variant_is_recognised_and_round_trips():
    lines = ["A man in a blue shirt stands on a ladder.", "Zwei Hunde spielen im Schnee.", "Ein Mädchen mit 3 Äpfeln."]
    for line in lines:
        assert sentence_case_of(noise.upper(line)) == "upper" and sentence_case_of(noise.title(line)) == "title"
        assert sentence_cased(noise.upper(line)) == sentence_cased(line) == line[0] + line[1:].lower()
        assert recased(line, "upper") == noise.upper(line) and recased(line, "title") == noise.title(line)
        assert recased(line, None) == line
    assert sentence_cased('"HELLO THERE."') == '"Hello there."'


@pytest.fixture(scope="module")
def tagged_data(tmp_path_factory):
    augment = {"upper": 0.3, "title": 0.2, "typos": 0.1}
    config = tiny_config(tmp_path_factory.mktemp("casing"), data={"augment": augment}, tokenizer={"case_tags": True})
    return prepare(config), AugmentConfig(**augment)


def test_a_case_tagged_model_reads_upper_and_title_input_as_tag_and_sentence_case(tagged_data):
    tokenizer = tagged_data[0].tokenizer()
    assert tokenizer.case_tags
    upper_id, title_id = tokenizer.src.piece_to_id(UPPER_TAG), tokenizer.src.piece_to_id(TITLE_TAG)
    line = "A dog runs to the house."
    plain = tokenizer.encode_src([line])[0]
    assert tokenizer.encode_input([line, noise.upper(line), noise.title(line)]) == [
        plain,
        [upper_id, *plain],
        [title_id, *plain],
    ]
    engine = SimpleNamespace(tokenizer=tokenizer, max_src=100, config=DecodeConfig(), info={})
    assert encode_sources(engine, [noise.upper(line)])[0] == [upper_id, *plain]  # what the engines encode
    target = tokenizer.encode_tgt(["Ein Hund läuft zum Haus."])[0]
    decoded = tokenizer.decode_tgt_batch([target, [upper_id, *target], [title_id, *target]])
    assert decoded == ["Ein Hund läuft zum Haus.", "EIN HUND LÄUFT ZUM HAUS.", "Ein Hund Läuft Zum Haus."]


def test_augmentation_teaches_the_tags_on_both_sides(tagged_data):
    data, augment = tagged_data
    tokenizer, split = data.tokenizer(), data.split("train")
    augmenter = Augmenter(split, tokenizer, [augment], [None], seed=1)
    epoch, masks = augmenter(2), augmenter.changes(2)
    tags = {"upper": tokenizer.src.piece_to_id(UPPER_TAG), "title": tokenizer.src.piece_to_id(TITLE_TAG)}
    seen = set()
    for i in range(300):
        case = next((name for name in tags if masks[name][i]), None)
        before_src, before_tgt = split.src[i].tolist(), split.tgt[i].tolist()
        after_src, after_tgt = epoch.src[i].tolist(), epoch.tgt[i].tolist()
        if case is None:
            assert after_tgt == before_tgt and after_src[:1] != [tags["upper"]] and after_src[:1] != [tags["title"]]
            continue
        seen.add(case)
        assert after_src[0] == after_tgt[0] == tags[case]
        assert after_tgt[1:] == before_tgt  # the target as it is: the tag carries its case
        text = tokenizer.decode_src_batch([before_src])[0]
        if not masks["typos"][i]:
            assert tokenizer.decode_src_batch([after_src[1:]])[0] == sentence_cased(text)
    assert seen == {"upper", "title"}


def test_change_pair_with_case_tags_sentence_cases_the_source_only():
    rng = np.random.default_rng(0)
    change = {**NO_CHANGE, "upper": True}
    assert change_pair("A dog in Paris.", "Ein Hund in Paris.", change, rng, case_tags=True) == (
        "A dog in paris.",
        "Ein Hund in Paris.",
    )
    assert change_pair("A dog.", "Ein Hund.", change, rng) == ("A DOG.", "EIN HUND.")  # without tags, as before


@pytest.mark.parametrize(
    "values, message",
    [
        ({"tokenizer": {"case_tags": True}}, "tokenizer.case_tags: the model learns the tags from UPPER and Title"),
        (
            {"tokenizer": {"case_tags": True, "model": "spm.model"}, "data": {"augment": {"upper": 0.1}}},
            "tokenizer.case_tags needs the case tags as pieces of a sentencepiece model trained here",
        ),
        (
            {
                "tokenizer": {"case_tags": True, "type": "unigram", "sampling_alpha": 0.1},
                "data": {"augment": {"upper": 0.1}},
            },
            "tokenizer.case_tags and tokenizer.sampling_alpha do not combine",
        ),
    ],
)
def test_case_tag_mistakes_are_one_line_errors(values, message):
    with pytest.raises(MtrainError, match=message) as error:
        from_dict({"data": {"train": {"demo": 10}, **values.get("data", {})}, "tokenizer": values["tokenizer"]})
    assert "\n" not in str(error.value)


def test_a_case_tag_belongs_to_the_word_after_it():
    from mtrain.data.tokenizer import word_numbers

    assert word_numbers([UPPER_TAG, "▁EIN", "▁HUN", "D"]) == [0, 0, 1, 1]
    assert word_numbers(["▁Ein", "▁Hund"]) == [0, 1]
