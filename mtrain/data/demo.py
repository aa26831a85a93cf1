"""The built-in demo corpus: English sentences rendered into German by rule.

A synthetic task that needs no download yet is not trivial: the model has to learn German
gender and case agreement (der/den/dem ... rote/roten/roter), number agreement of verbs,
verb-second inversion after a fronted adverb ("today the dog sees ..." -> "heute sieht der
Hund ..."), and verb-final order in subordinate clauses ("..., weil die Katze den Ball sieht").
The generator is deterministic for a given seed and uses only the standard library.
"""

from __future__ import annotations

import random

# English noun -> (German singular, German plural, gender)
NOUNS = {
    "dog": ("Hund", "Hunde", "m"),
    "cat": ("Katze", "Katzen", "f"),
    "house": ("Haus", "Häuser", "n"),
    "man": ("Mann", "Männer", "m"),
    "woman": ("Frau", "Frauen", "f"),
    "child": ("Kind", "Kinder", "n"),
    "bird": ("Vogel", "Vögel", "m"),
    "car": ("Auto", "Autos", "n"),
    "book": ("Buch", "Bücher", "n"),
    "teacher": ("Lehrer", "Lehrer", "m"),
    "flower": ("Blume", "Blumen", "f"),
    "ball": ("Ball", "Bälle", "m"),
    "apple": ("Apfel", "Äpfel", "m"),
    "door": ("Tür", "Türen", "f"),
}
ENGLISH_PLURAL = {"man": "men", "woman": "women", "child": "children"}
ADJECTIVES = {
    "red": "rot",
    "small": "klein",
    "big": "groß",
    "old": "alt",
    "young": "jung",
    "new": "neu",
    "green": "grün",
    "tired": "müde",
    "happy": "glücklich",
    "fast": "schnell",
}
# English third person singular -> (German singular, German plural)
VERBS = {
    "sees": ("sieht", "sehen"),
    "likes": ("mag", "mögen"),
    "finds": ("findet", "finden"),
    "buys": ("kauft", "kaufen"),
    "carries": ("trägt", "tragen"),
    "hears": ("hört", "hören"),
    "visits": ("besucht", "besuchen"),
    "paints": ("malt", "malen"),
}
NUMBERS = {"two": "zwei", "three": "drei", "four": "vier", "five": "fünf", "six": "sechs", "seven": "sieben"}
CONJUNCTIONS = {"because": "weil", "when": "wenn", "although": "obwohl"}
ADVERBS = {"today": "heute", "often": "oft", "now": "jetzt", "sometimes": "manchmal"}

DEFINITE = {
    ("nom", "m"): "der",
    ("nom", "f"): "die",
    ("nom", "n"): "das",
    ("nom", "pl"): "die",
    ("acc", "m"): "den",
    ("acc", "f"): "die",
    ("acc", "n"): "das",
    ("acc", "pl"): "die",
}
INDEFINITE = {
    ("nom", "m"): "ein",
    ("nom", "f"): "eine",
    ("nom", "n"): "ein",
    ("acc", "m"): "einen",
    ("acc", "f"): "eine",
    ("acc", "n"): "ein",
}
# Adjective endings after the definite article (weak), indefinite article (mixed), or none (strong plural).
WEAK = {
    ("nom", "m"): "e",
    ("nom", "f"): "e",
    ("nom", "n"): "e",
    ("nom", "pl"): "en",
    ("acc", "m"): "en",
    ("acc", "f"): "e",
    ("acc", "n"): "e",
    ("acc", "pl"): "en",
}
MIXED = {
    ("nom", "m"): "er",
    ("nom", "f"): "e",
    ("nom", "n"): "es",
    ("acc", "m"): "en",
    ("acc", "f"): "e",
    ("acc", "n"): "es",
}


def _inflect(stem: str, ending: str) -> str:
    return stem + (ending[1:] if stem.endswith("e") else ending)


def _noun_phrase(rng: random.Random, case: str) -> tuple[list[str], list[str], bool]:
    """One noun phrase in English and German; returns (en, de, is_plural)."""
    noun = rng.choice(list(NOUNS))
    de_sg, de_pl, gender = NOUNS[noun]
    adjective = rng.choice(list(ADJECTIVES)) if rng.random() < 0.5 else None
    kind = rng.choices(["the", "a", "the-pl", "number"], weights=[4, 3, 2, 2])[0]
    plural = kind in ("the-pl", "number")
    key = (case, "pl" if plural else gender)
    en_noun = ENGLISH_PLURAL.get(noun, noun + "s") if plural else noun
    if kind == "number":
        number = rng.choice(list(NUMBERS))
        en, de, ending = [number], [NUMBERS[number]], "e"
    elif kind == "a":
        en, de, ending = ["an" if (adjective or noun)[0] in "aeiou" else "a"], [INDEFINITE[key]], MIXED[key]
    else:
        en, de, ending = ["the"], [DEFINITE[key]], WEAK[key]
    if adjective:
        en.append(adjective)
        de.append(_inflect(ADJECTIVES[adjective], ending))
    en.append(en_noun)
    de.append(de_pl if plural else de_sg)
    return en, de, plural


def _clause(rng: random.Random) -> tuple[list[str], list[str], list[str], list[str]]:
    """Subject, verb, object of one clause: returns (en_words, de_subject, de_verb, de_object)."""
    en_subj, de_subj, plural = _noun_phrase(rng, "nom")
    en_obj, de_obj, _ = _noun_phrase(rng, "acc")
    verb = rng.choice(list(VERBS))
    en_verb = (verb[:-3] + "y" if verb.endswith("ies") else verb[:-1]) if plural else verb
    de_verb = VERBS[verb][1 if plural else 0]
    return en_subj + [en_verb] + en_obj, de_subj, [de_verb], de_obj


def _capitalize(words: list[str]) -> str:
    text = " ".join(words)
    return text[:1].upper() + text[1:] + "."


def _word_numbers(tokens: list[str]) -> list[int | None]:
    """The whitespace-word index of each token once the text is joined (a comma joins the word before it)."""
    numbers, word = [], -1
    for token in tokens:
        word += token != ","
        numbers.append(None if token == "," else word)
    return numbers


def aligned_pair(rng: random.Random) -> tuple[str, str, list[tuple[int, int]]]:
    """One English sentence, its German translation, and the gold word alignment: (English word,
    German word) index pairs over the whitespace-separated words. Every German word translates
    exactly one English word, so the rules that build the sentence know the alignment."""
    en, subj, verb, obj = _clause(rng)
    e_subj, e_verb, e_obj = list(range(len(subj))), [len(subj)], list(range(len(subj) + 1, len(en)))
    if rng.random() < 0.3:  # a fronted adverb puts the German verb before its subject
        adverb = rng.choice(list(ADVERBS))
        en = [adverb] + en
        de = [ADVERBS[adverb]] + verb + subj + obj
        source = [0] + [i + 1 for i in e_verb + e_subj + e_obj]
    else:
        de = subj + verb + obj
        source = e_subj + e_verb + e_obj
    if rng.random() < 0.4:  # a subordinate clause sends its German verb to the end
        conjunction = rng.choice(list(CONJUNCTIONS))
        en2, subj2, verb2, obj2 = _clause(rng)
        start = len(en) + 2
        en = en + [",", conjunction] + en2
        de = de + [",", CONJUNCTIONS[conjunction]] + subj2 + obj2 + verb2
        source += [start - 2, start - 1] + [start + k for k in range(len(subj2))]
        source += [start + len(subj2) + 1 + k for k in range(len(obj2))] + [start + len(subj2)]
    en_words, de_words = _word_numbers(en), _word_numbers(de)
    alignment = [(en_words[i], de_words[j]) for j, i in enumerate(source) if de[j] != ","]
    return _capitalize(en).replace(" ,", ","), _capitalize(de).replace(" ,", ","), alignment


def generate(count: int, seed: int) -> tuple[list[str], list[str]]:
    """`count` demo pairs as (english_lines, german_lines); the same seed gives the same pairs."""
    en, de, _ = generate_aligned(count, seed)
    return en, de


def generate_aligned(count: int, seed: int) -> tuple[list[str], list[str], list[list[tuple[int, int]]]]:
    """Like `generate`, with each pair's gold word alignment (`aligned_pair`)."""
    rng = random.Random(seed)
    triples = [aligned_pair(rng) for _ in range(count)]
    return [t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples]
