"""Terminology on a test set: build its term test set, then translate without and with the terms. One JSON line.

    python scripts/eval_terms.py --checkpoint runs/multi30k-en-de/checkpoint_avg.pt \\
        --src ../shared/data/multi30k/test_2016_flickr.en.gz --ref ../shared/data/multi30k/test_2016_flickr.de.gz \\
        --align-with ../shared/data/multi30k/train.en.gz ../shared/data/multi30k/train.de.gz --out runs/terms-en-de

The term test set (written to OUT/terms.tsv as `line<TAB>source term<TAB>target term`, reused when
there): for each sentence, one source word and the reference word aligned to it (eflomal on the
words of the test set together with --align-with, symmetrized with grow-diag-final-and), both at
least 4 letters, the source word not a stop word, the reference word not in the plain model's
output of the sentence (case-insensitive, whole words): the first such pair in source order.
Sentences without one get no term.

Rows: the plain beam search, the hard-constrained one (each term its sentence's glossary) and, for a
model trained with data.augment.terms, soft terms (each term written into its sentence's source), with
term use (the target term in the output, case-insensitive, whole words, over the sentences with a
term, and split by the number of pieces of the target term), sacreBLEU, chrF and length ratio of all
sentences, and decoding seconds (same run, same threads).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.data.alignments import align_texts  # noqa: E402
from mtrain.data.glossary import Glossary, Term  # noqa: E402
from mtrain.data.sources import read_lines  # noqa: E402
from mtrain.deploy.engines import open_engine  # noqa: E402
from mtrain.errors import MtrainError  # noqa: E402
from mtrain.evaluation.scores import corpus_scores  # noqa: E402
from mtrain.files import atomic_write_text  # noqa: E402
from mtrain.inference.terminology import check_soft_terms, translate_with_terms  # noqa: E402

WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
STOP_WORDS = set(
    "about above after again against also because been before being below between both could does doing down "
    "during each from further have having here into itself more most other over same should some such than that "
    "their them then there these they this those through under until very were what when where which while with "
    "would your"
    .split()
)  # fmt: skip


def words(line: str) -> list[str]:
    return WORD.findall(line)


def align_words(src: list[str], ref: list[str], extra_src: list[str], extra_ref: list[str]) -> list[set]:
    """Symmetrized eflomal word links of each (src, ref) pair, aligned together with the extra pairs."""
    source, target = ([" ".join(words(line)) for line in lines] for lines in (src + extra_src, ref + extra_ref))
    return align_texts(source, target)[: len(src)]


def choose_term(src: str, ref: str, hyp: str, links: set) -> Term | None:
    """The first aligned (source word, reference word) pair in source order that makes a term."""
    src_words, ref_words = words(src), words(ref)
    in_output = {w.casefold() for w in words(hyp)}
    for i, j in sorted(links):
        s, r = src_words[i], ref_words[j]
        if len(s) >= 4 and len(r) >= 4 and s.isalpha() and r.isalpha() and s.lower() not in STOP_WORDS:
            if r.casefold() not in in_output and sum(1 for a, _ in links if a == i) == 1:
                return Term(s, r)
    return None


def term_used(output: str, term: Term) -> bool:
    return term.target.casefold() in {w.casefold() for w in words(output)}


def use_by_pieces(used: dict[int, bool], pieces: dict[int, int]) -> dict[str, float]:
    """Term use by the number of pieces the target vocabulary cuts the term into (1, 2, 3, 4+): a
    rare word comes in many pieces, and copying it is what a soft-term model finds hardest."""
    groups: dict[str, list[bool]] = {}
    for i, count in pieces.items():
        groups.setdefault(str(count) if count < 4 else "4+", []).append(used[i])
    return {name: round(100 * sum(hits) / len(hits), 1) for name, hits in sorted(groups.items())}


def learned_terms(engine: object) -> bool:
    """Whether the model was trained with data.augment.terms (soft terms)."""
    try:
        check_soft_terms(engine.tokenizer)
    except MtrainError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--ref", type=Path, required=True)
    parser.add_argument("--align-with", type=Path, nargs=2, metavar=("SRC", "TGT"), help="more pairs for eflomal")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    src, ref = read_lines(args.src), read_lines(args.ref)
    engine = open_engine(args.checkpoint, device="cpu", threads=2)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    plain = engine.translate(src)
    plain_s = time.perf_counter() - started
    terms_file = args.out / "terms.tsv"
    if not terms_file.is_file():
        extra = [read_lines(p) for p in args.align_with] if args.align_with else [[], []]
        links = align_words(src, ref, *extra)
        chosen = [choose_term(s, r, h, a) for s, r, h, a in zip(src, ref, plain, links)]
        atomic_write_text(terms_file, "".join(f"{i}\t{t.source}\t{t.target}\n" for i, t in enumerate(chosen) if t))
    terms: list[list[Term]] = [[] for _ in src]
    for line in terms_file.read_text().splitlines():
        i, source, target = line.split("\t")
        terms[int(i)] = [Term(source, target)]
    started = time.perf_counter()
    found = translate_with_terms(engine, src, terms)
    hard_s = time.perf_counter() - started
    hard = [engine.tokenizer.decode_tgt(hyps[0].tokens) for hyps in found.results]
    rows = [("plain", plain, plain_s), ("hard", hard, hard_s)]
    if learned_terms(engine):
        started = time.perf_counter()
        soft = engine.translate([Glossary(t).annotate(s, engine.config.soft_terms) for s, t in zip(src, terms)])
        rows.append(("soft", soft, time.perf_counter() - started))
    with_term = [i for i, t in enumerate(terms) if t]
    report = {"sentences": len(src), "with_term": len(with_term), "beam": engine.config.beam}
    targets = engine.tokenizer.encode_tgt([terms[i][0].target for i in with_term])
    pieces = {i: len(ids) for i, ids in zip(with_term, targets)}
    for name, outputs, seconds in rows:
        scores = corpus_scores(outputs, [ref], tgt_lang=engine.info.get("tgt_lang"))
        used = {i: term_used(outputs[i], terms[i][0]) for i in with_term}
        report[name] = {"term_use_pct": round(100 * sum(used.values()) / max(len(with_term), 1), 2),
                        "bleu": round(scores["bleu"], 2),
                        "chrf": round(scores["chrf"], 2), "length_ratio": round(scores["length_ratio"], 3),
                        "seconds": round(seconds, 2)}  # fmt: skip
        report[name]["term_use_pct_by_pieces"] = use_by_pieces(used, pieces)
        atomic_write_text(args.out / f"{name}.hyp", "".join(o + "\n" for o in outputs))
    report["hard"]["unmet_lines"] = len(found.unmet)
    report["time_ratio"] = round(hard_s / plain_s, 2)
    report["cpu"] = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "")
    report["avx512_bf16"] = "avx512_bf16" in open("/proc/cpuinfo").read()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
