"""Off-target translations: the share of output lines that CLD2 (pycld2, the language id of
data.filters.langid), told to expect the language asked for, still finds to be in another language
(or covering less than half of the line). Prints one JSON line.

    python scripts/eval_off_target.py --hyp runs/x/test.hyp.fr --lang fr [--ref data/test.fr]

With --ref, the references' own rate beside it: the floor a perfect system would get. Told the
language, CLD2 misreads 0-0.3% of Multi30K's German, French and Czech test captions; untold, it
reads 2.6% of the French ones as English or Danish.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtrain.data.filters import language_matches
from mtrain.data.sources import read_lines

THRESHOLD = 0.5  # the share of a line in its language that data.filters.langid asks for by default


def off_target(lines: list[str], lang: str) -> dict:
    missed = sum(not language_matches(line, lang, THRESHOLD, hint=True) for line in lines)
    return {"lines": len(lines), "off_target": missed, "rate": missed / max(len(lines), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hyp", required=True)
    parser.add_argument("--lang", required=True)
    parser.add_argument("--ref")
    args = parser.parse_args()
    result = {"lang": args.lang, "hyp": off_target(read_lines(Path(args.hyp)), args.lang)}
    if args.ref:
        result["ref"] = off_target(read_lines(Path(args.ref)), args.lang)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
