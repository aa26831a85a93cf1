"""Multi30K EN-DE training data with known noise, for the data.filters experiment (scripts/run_noise.sh).

A share of the pairs (default 20%) is corrupted, in equal parts, by the kinds of noise web-crawled
corpora carry: French on the German side (the Multi30K French of the same line), English on the
German side (another line's English), the source copied to the target, misaligned pairs (the German
of another line) and junk (URLs, digits, symbols, mojibake). Writes {out}.en, {out}.de and
{out}.noise (each line's kind of noise, or "clean"), and prints one JSON line with the counts.

    python scripts/make_noisy.py --multi30k data/multi30k --out runs/noise-data/train
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections import Counter
from pathlib import Path

KINDS = ("french_target", "english_target", "copy", "misaligned", "junk")


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def junk(rng: random.Random) -> str:
    """A line of the junk crawls carry: a URL, a hash, digits and symbols, or mojibake."""
    choices = [
        lambda: f"http://www.{rng.choice(['example', 'shop', 'news'])}.com/{rng.getrandbits(64):x}/index.html",
        lambda: f"{rng.getrandbits(128):032x}",
        lambda: " ".join(str(rng.randint(0, 9999)) for _ in range(rng.randint(3, 8))) + " | © ® ™",
        lambda: "Ã¤Ã¶Ã¼ Ã\x9f " + "\ufffd" * rng.randint(2, 6) + " Ã©tÃ©",
    ]
    return rng.choice(choices)()


def corrupt(en: list[str], de: list[str], fr: list[str], share: float, seed: int) -> tuple[list, list, list]:
    rng = random.Random(seed)
    n = len(en)
    chosen = rng.sample(range(n), int(share * n))
    kinds = ["clean"] * n
    en, de = list(en), list(de)
    for i, line in enumerate(chosen):
        kind = KINDS[i % len(KINDS)]
        kinds[line] = kind
        other = rng.randrange(n)
        if kind == "french_target":
            de[line] = fr[line]
        elif kind == "english_target":
            de[line] = en[other]
        elif kind == "copy":
            de[line] = en[line]
        elif kind == "misaligned":
            de[line] = de[other]
        else:
            de[line] = junk(rng)
            if rng.random() < 0.5:
                en[line] = junk(rng)
    return en, de, kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--multi30k", default="data/multi30k")
    parser.add_argument("--out", default="runs/noise-data/train")
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    root = Path(args.multi30k)
    en, de, fr = (read(root / f"train.{lang}.gz") for lang in ("en", "de", "fr"))
    en, de, kinds = corrupt(en, de, fr, args.share, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, lines in (("en", en), ("de", de), ("noise", kinds)):
        out.with_name(f"{out.name}.{suffix}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    print(json.dumps({"pairs": len(en), **Counter(kinds)}))


if __name__ == "__main__":
    main()
