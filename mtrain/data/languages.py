"""Target-language tokens: how one model is told which of its languages to translate into.

A multilingual model reads the target language as a token at the start of its source (Johnson et
al., 2017, "Google's Multilingual NMT System"), written `>>fra<<` as OPUS-MT's Marian models do,
so that mtrain's models, their exports and imported OPUS-MT models agree. Users name a language
the way they know it (`fr`, `fra`, `fre`): two codes name the same language when the CLDR
aliases that babel ships (ISO 639-2/3 to 639-1) say so.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from mtrain.errors import MtrainError

LANGUAGE_TOKEN = re.compile(r">>([^<>\s]+)<<")


def language_token(code: str) -> str:
    return f">>{code}<<"


def token_code(code: str) -> str:
    """The code a trained model's language token carries: a two-letter ISO 639-1 code as its
    three-letter ISO 639-3 code (de -> deu, fr -> fra, cs -> ces, as OPUS-MT writes them), any other
    code as given."""
    if len(code) != 2:
        return code
    three = [alias for alias, to in _aliases().items() if to == code and len(alias) == 3]
    terminology = [alias for alias in three if alias not in BIBLIOGRAPHIC]
    return (terminology or [code])[-1]  # babel lists individual languages (cmn, mol) before the macrolanguage


# ISO 639-2/B codes that differ from the 639-2/T (and 639-3) codes OPUS-MT uses
BIBLIOGRAPHIC = frozenset("alb arm baq bur chi cze dut fre geo ger gre ice mac mao may per rum slo tib wel".split())


def token_languages(pieces: Iterable[str]) -> list[str]:
    """The language codes of a vocabulary's language tokens, in vocabulary order."""
    return [match[1] for piece in pieces if (match := LANGUAGE_TOKEN.fullmatch(piece))]


@functools.cache
def _aliases() -> dict[str, str]:
    from babel.core import get_global

    return dict(get_global("language_aliases"))


def canonical(code: str) -> str:
    """A language code in one spelling: lower case, '_' as '-', an ISO 639-2/3 code as its 639-1
    code where one exists ("fra", "fre" -> "fr"); a region or script stays ("pt-BR" -> "pt-br")."""
    language, _, rest = code.strip().lower().replace("_", "-").partition("-")
    language = _aliases().get(language, language)
    return f"{language}-{rest}" if rest else language


def choose_target(requested: str, own_language: str, token_codes: list[str]) -> str:
    """The code of the language token to put before every source ("" for none) when a user asks
    for `requested`: one of the model's tokens, or, for a model without them, its own language."""
    if not token_codes:
        if canonical(requested) == canonical(own_language):
            return ""
        raise MtrainError(
            f"this model translates into '{own_language}' only and has no target-language tokens; leave out the "
            f"target language '{requested}' or use a multilingual model"
        )
    for code in token_codes:
        if code == requested or canonical(code) == canonical(requested):
            return code
    raise MtrainError(
        f"the model translates into {', '.join(token_codes)}; '{requested}' is none of them (choose one of those)"
    )
