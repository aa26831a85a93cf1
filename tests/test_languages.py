"""Target-language tokens (data/languages.py): language codes in any ISO spelling, the model's
languages, and a bilingual model asked for a language: its own translates as without, another is
a one-line error. The multilingual OPUS-MT import is in test_import.py."""

from __future__ import annotations

import pytest

from mtrain.data.languages import canonical, choose_target, token_languages
from mtrain.deploy.engines import open_engine
from mtrain.errors import MtrainError

from helpers import run_cli


@pytest.mark.parametrize(
    "code, expected",
    [("fr", "fr"), ("fra", "fr"), ("fre", "fr"), ("DEU", "de"), ("ces", "cs"), ("pt_BR", "pt-br"), ("xx", "xx")],
)
def test_a_language_code_in_any_iso_spelling(code, expected):
    assert canonical(code) == expected


def test_the_token_chosen_for_a_request():
    assert token_languages(["<unk>", ">>fra<<", "\u2581Haus", ">>deu<<", ">>x"]) == ["fra", "deu"]
    assert choose_target("fr", "mul", ["fra", "deu"]) == "fra"
    assert choose_target("de", "mul", ["fr", "de"]) == "de"
    assert choose_target("deu", "de", []) == ""  # a bilingual model's own language: no token
    with pytest.raises(MtrainError, match="translates into 'de' only"):
        choose_target("fr", "de", [])


def test_a_bilingual_model_takes_its_own_target_language_only(demo_run, tmp_path):
    checkpoint = demo_run / "checkpoint_avg.pt"
    lines = ["the cat sees a dog", "a small bird sings"]
    plain = open_engine(checkpoint, device="cpu").translate(lines)
    assert open_engine(checkpoint, device="cpu", tgt_lang="de").translate(lines) == plain
    source = tmp_path / "in.en"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli("translate", "--checkpoint", str(checkpoint), "-i", str(source), "--tgt-lang", "fr")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: this model translates into 'de' only and has no target-language tokens; leave out the target "
        "language 'fr' or use a multilingual model"
    ]
