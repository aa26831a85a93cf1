"""data.filters: each filter's kept and dropped pairs, its counts, off = the same prepared data,
the same result in one process and in worker processes, and the refusals."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from mtrain.config import FilterConfig
from mtrain.data import clean
from mtrain.data.demo import generate
from mtrain.data.filters import BAD_CHARACTERS, BLOCKS, Side, filter_pairs, numbers, pair_tests
from mtrain.data.prepare import fingerprint, prepare
from mtrain.errors import MtrainError

from helpers import data_files, run_cli, tiny_config

GOOD = ("A man is riding a horse on the beach.", "Ein Mann reitet am Strand auf einem Pferd.")
CASES = {  # filter: (its settings, a pair it drops)
    "langid": ({"langid": True}, ("A man is riding a horse.", "Un homme monte un cheval sur la plage.")),
    "copy": ({"copy": True}, ("Barack Obama visits Berlin.", "Barack Obama visits Berlin!")),
    "control_chars": ({"control_chars": True}, ("A dog \x07 runs.", "Ein Hund l\ufffdft.")),
    "min_letters": ({"min_letters": 0.5}, ("12:30 - 14:45 | 0049 30 1234", "12:30 - 14:45 | 0049 30 1234 !")),
    "max_other_script": ({"max_other_script": 0.2}, ("A woman sings.", "Женщина поёт песню.")),
    "max_token_chars": ({"max_token_chars": 30}, ("See https://example.com/a/very/long/path", "Siehe dort.")),
    "numbers": ({"numbers": True}, ("3 cats sleep.", "4 Katzen schlafen.")),
}


def run_filters(settings: dict, pairs: list[tuple[str, str]], skip: list[str] = ()):
    tests = pair_tests(FilterConfig(**settings), "en", "de", list(skip))
    src, tgt = map(list, zip(*pairs))
    return filter_pairs(src, tgt, tests)


@pytest.mark.parametrize("name", list(CASES))
def test_each_filter_drops_its_noise_and_keeps_a_good_pair(name):
    settings, bad = CASES[name]
    src, tgt, counts, samples = run_filters(settings, [GOOD, bad, GOOD])
    assert list(zip(src, tgt)) == [GOOD, GOOD]
    assert counts == {name: 1} and samples == {name: [bad]}
    assert run_filters(settings, [GOOD, bad], skip=[name])[2] == {}  # skipped for this corpus: not even counted


def test_text_language_identification_cannot_read_is_not_the_language():
    assert run_filters({"langid": True}, [(GOOD[0], "Ein Mann \ud800 reitet am Strand auf einem Pferd.")])[2] == {
        "langid": 1
    }


def test_copies_and_numbers_mean_what_they_say():
    """Near-copies whose words differ slightly are copies; text without letters or digits is not; a
    long pair costs no quadratic time; 1.5 is not 15, Arabic-Indic 12 is 12; a chunk may end on an
    empty line."""
    copy = [("colour flavour behaviour neighbour", "color flavor behavior neighbor"), ("...", "!!!")]
    assert run_filters({"copy": True}, copy)[2] == {"copy": 1}
    long_pair = ("abc def ghij " * 800, "abc def ghik " * 800)  # 10,400 characters a side
    assert run_filters({"copy": True}, [long_pair])[2] == {"copy": 1}
    assert numbers("1.5 kg") != numbers("15 kg") and numbers("\u0661\u0662 Katzen") == numbers("12 cats")
    assert numbers("1,000 or 2.5") == numbers("1.000 oder 2,5")
    letter_e = np.arange(0x110000) == ord("e")
    assert Side(["some text", ""]).count(letter_e).tolist() == [2, 0]
    assert run_filters({"min_letters": 0.5}, [("Fine.", "Gut."), ("", "")])[2] == {"min_letters": 1}


def test_numbers_and_copies_look_past_formatting():
    assert run_filters({"numbers": True}, [("It costs 1,000.50 euros.", "Es kostet 1.000,50 Euro.")])[2] == {
        "numbers": 0
    }
    kept = run_filters({"copy": True}, [("The house is red.", "Das Haus ist rot.")])
    assert kept[2] == {"copy": 0}


# The filters' definitions, one pair at a time in plain Python: what the chunk-at-a-time checks
# (numpy tables, one regular expression pass per chunk) must give, character for character
def _letters(text):
    return sum(map(str.isalpha, text))


def _letter_share(text):
    chars = len(text) - text.count(" ")
    return _letters(text) / chars if chars else 0.0


def _non_latin_share(text):
    outside = _letters(re.sub(f"[{BLOCKS['Latin']}]", "", text))
    return outside / _letters(text) if _letters(text) else 0.0


def _longest_common_subsequence(a, b):
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal, row[0] = 0, 0
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def _copy(s, t):
    """Letters and digits, lowercased, non-empty, with 2 x LCS / both lengths >= 0.9."""
    a, b = (re.sub(r"[\W_]+", "", x.lower()) for x in (s, t))
    if not a or 2 * min(len(a), len(b)) < 0.9 * (len(a) + len(b)):  # the lengths alone rule it out
        return False
    return 2 * _longest_common_subsequence(a, b) >= 0.9 * (len(a) + len(b))


PLAIN = {
    "control_chars": lambda s, t: any(BAD_CHARACTERS.search(x) for x in (s, t)),
    "max_token_chars": lambda s, t: any(len(w) > 30 for x in (s, t) for w in re.split(r"\s", x)),
    "min_letters": lambda s, t: min(_letter_share(s), _letter_share(t)) < 0.5,
    "max_other_script": lambda s, t: max(_non_latin_share(s), _non_latin_share(t)) > 0.2,
    "numbers": lambda s, t: numbers(s) != numbers(t),
    "copy": _copy,
}


def test_chunk_checks_give_what_each_filter_defines_pair_by_pair():
    rng = random.Random(3)
    pieces = list("abcXYZ äöüßÉİΣσς 0123456789.,_-!?\t\x07\x7f\ufffd\ud800\ufdd0\u0307") + [
        "Женщина", "日本語", "\U00020000", "https://example.com/" + "z" * 20, "1,000.5", "1.000,5", "ΣΑΣ", ""
    ]  # fmt: skip
    src = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    tgt = [rng.choice([s, s.upper(), s + "!", s[:-1] + "q", src[rng.randrange(len(src))]]) for s in src]
    src, tgt = src + ["x", ""], tgt + ["", ""]  # the chunk ends on empty lines
    tests = dict(pair_tests(FilterConfig(**ALL_ON), "en", "de", []))
    sides, everything = (Side(src), Side(tgt)), np.ones(len(src), dtype=bool)
    for name, plain in PLAIN.items():
        expected = [plain(s, t) for s, t in zip(src, tgt)]
        assert tests[name](*sides, everything).tolist() == expected, name
        assert 100 < sum(expected) < len(src) - 100, name  # the sample exercises both outcomes
        if name in ("numbers", "copy"):  # the costly checks look only at the pairs still kept
            even = np.arange(len(src)) % 2 == 0
            assert tests[name](*sides, even).tolist() == (np.array(expected) & even).tolist(), name
    assert Side([]).count(np.ones(0x110000, dtype=bool)).tolist() == []


def noisy_corpus(directory, count=1200):
    """Demo pairs with every fifth pair corrupted by one of the filters' kinds of noise."""
    en, de = generate(count, seed=5)
    noise = [bad for _, bad in CASES.values()]
    for i in range(0, count, 5):
        en[i], de[i] = noise[(i // 5) % len(noise)]
    for lang, lines in (("en", en), ("de", de)):
        (directory / f"noisy.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(directory / "noisy")


ALL_ON = {"langid": True, "copy": True, "control_chars": True, "min_letters": 0.5, "max_other_script": 0.2,
          "max_token_chars": 30, "numbers": True}  # fmt: skip


def test_filters_count_in_the_manifest_and_give_the_same_pairs_in_workers(tmp_path, monkeypatch):
    data = {"train": {"path": noisy_corpus(tmp_path)}, "valid": {"demo": 30}, "test": {}, "filters": ALL_ON}
    config = tiny_config(tmp_path / "run", data=data)
    manifest = prepare(config).manifest
    counts = manifest["clean"]
    # 240 noisy pairs, by kind; language identification also drops a few short clean pairs (CLD2 reads
    # some of the demo's short German sentences as Dutch or Norwegian): it runs last, on what the others keep
    assert [counts[name] for name in CASES][1:] == [35, 34, 34, 34, 34, 34] and counts["langid"] >= 35
    assert counts["kept"] == 1200 - sum(counts[name] for name in CASES) and manifest["corpora"][0]["clean"] == counts
    # in one process, the whole corpus as one chunk; and in chunks of 100 through worker processes
    one = clean._clean_chunk(0, *map(list, zip(*_read_pairs(tmp_path / "noisy"))), config.data)
    monkeypatch.setattr(clean, "CHUNK_PAIRS", 100)
    chunks = list(clean.cleaned_training_chunks(config))
    assert len(chunks) == 12
    assert [p for c in chunks for p in zip(c[1], c[2])] == list(zip(one[1], one[2]))


def _read_pairs(prefix):
    en, de = (prefix.with_suffix(f".{lang}").read_text(encoding="utf-8").splitlines() for lang in ("en", "de"))
    return list(zip(en, de))


def test_filters_off_prepare_the_same_data_as_before_they_existed(tmp_path):
    plain = tiny_config(tmp_path / "a")
    explicit = tiny_config(tmp_path / "b", data={**plain.to_dict()["data"], "filters": {}, "train": {"demo": 2000}})
    assert fingerprint(plain) == fingerprint(explicit)
    assert data_files(prepare(plain).dir) == data_files(prepare(explicit).dir)
    assert "langid" not in json.loads((tmp_path / "a" / "data" / "manifest.json").read_text())["clean"]


def test_dry_run_shows_counts_and_examples_and_writes_nothing(tmp_path):
    data = {"train": {"path": noisy_corpus(tmp_path, 100)}, "valid": {}, "test": {}, "filters": {"copy": True}}
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(tiny_config(tmp_path / "run", data=data).to_dict()))
    result = run_cli("prepare", "-c", str(path), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert (
        "100 pairs in, 94 kept; dropped: empty 0, too_short 0, too_long 0, ratio 0, duplicate 0, copy 6"
        in result.stdout
    )
    assert "dropped by copy, e.g.:\n  Barack Obama visits Berlin. ||| Barack Obama visits Berlin!\n" in result.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"filters": {"langid_threshold": 1.5}}, "data.filters.langid_threshold must be from 0 to 1, got 1.5"),
        ({"filters": {"max_token_chars": -1}}, "data.filters.max_token_chars must be >= 0"),
        ({"filters": {"lang_id": True}}, "unknown key 'data.filters.lang_id'; did you mean 'data.filters.langid'?"),
        ({"train": {"demo": 50, "skip_filters": ["lid"]}}, "data.train.skip_filters: lid is not a filter (langid,"),
        ({"valid": {"demo": 5, "skip_filters": ["copy"]}}, "validation and test data are never filtered"),
    ],
)
def test_bad_filter_settings_are_refused(tmp_path, data, message):
    with pytest.raises(MtrainError, match=message.replace("(", r"\(").replace("?", r"\?")):
        tiny_config(tmp_path, data=data)


@pytest.mark.parametrize(
    "filters, message",
    [
        ({"max_other_script": 0.1}, "data.filters.max_other_script: no script is known for the language 'qq'"),
        ({"langid": True}, "data.filters.langid: CLD2 does not know the language 'qq'"),
    ],
)
def test_filters_a_language_pair_cannot_use_are_refused_before_reading(tmp_path, filters, message):
    config = tiny_config(tmp_path / "run", data={"tgt_lang": "qq", "filters": filters})
    with pytest.raises(MtrainError, match=message):
        prepare(config)
