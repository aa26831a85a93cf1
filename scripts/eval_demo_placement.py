"""Markup placement on the demo corpus, whose gold word alignment is known by construction: one JSON line.

    python scripts/eval_demo_placement.py --out runs/demo-placement [--guided-weight 0.1] [--count 1000]

Trains the test suite's demo model (tests/conftest.py's DEMO_MODEL and DEMO_TRAIN: 30,000 pairs, 300 steps)
twice, as it is and with a guided head (data.alignments: eflomal, train.guided_alignment), unless
the runs are there already. Then both translate `count` demo sentences, each with one inline
element around one to three words (the robustness report's `tags` variant), with --format html.
An element lands when it spans exactly the target words from the first to the last one the gold
alignment links to its source words; it is counted where the translation equals the reference
(elsewhere the gold alignment does not apply). Also counted: outputs whose tags are the source's
(well-formed, in order) and outputs whose text equals the translation of the untagged sentence.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import DEMO_MODEL, DEMO_TRAIN  # noqa: E402  the test suite's demo recipe, defined once

from mtrain.config_io import from_dict  # noqa: E402
from mtrain.data import noise  # noqa: E402
from mtrain.data.demo import generate_aligned  # noqa: E402
from mtrain.data.markup import parse  # noqa: E402
from mtrain.data.placement import Segment  # noqa: E402
from mtrain.deploy.engines import open_engine  # noqa: E402
from mtrain.evaluation.robustness import tags_kept  # noqa: E402
from mtrain.insight.markup import MarkupTranslator  # noqa: E402
from mtrain.training.session import train  # noqa: E402


def demo_config(out: Path, guided_weight: float):
    data = {"train": {"demo": 30000}, "valid": {"demo": 300}, "test": {"demo": 300}}
    train_settings = dict(DEMO_TRAIN)
    if guided_weight:
        data["alignments"] = "eflomal"
        train_settings["guided_alignment"] = {"weight": guided_weight}
    return from_dict(
        {
            "out_dir": str(out),
            "data": data,
            "tokenizer": {"vocab_size": 400},
            "model": DEMO_MODEL,
            "train": train_settings,
        }
    )


def element_span(document: str) -> tuple[str, int, int]:
    (segment,) = [p for p in parse(document, "html") if isinstance(p, Segment)]
    (element,) = segment.elements
    return segment.text, element.first, element.last


def placement(checkpoint: Path, count: int) -> dict:
    sources, references, gold = generate_aligned(count, seed=4242)
    tagged = [noise.inline_element(s, np.random.default_rng([7, i])) for i, s in enumerate(sources)]
    engine = open_engine([checkpoint], device="cpu", precision="fp32")
    outputs = MarkupTranslator(engine, "html")(tagged)
    clean = engine.translate(sources)
    landed = checked = kept = same_text = 0
    for source, output, clean_output, reference, links in zip(tagged, outputs, clean, references, gold):
        kept += tags_kept(source, output)
        text, first, last = element_span(output)
        same_text += text == clean_output
        _, source_first, source_last = element_span(source)
        aligned = [j for i, j in links if source_first <= i < source_last]
        if text == reference and aligned:
            checked += 1
            landed += (first, last) == (min(aligned), max(aligned) + 1)
    return {
        "sentences": count,
        "landed_pct": round(100 * landed / max(checked, 1), 1),
        "landed": landed,
        "checked": checked,
        "tags_kept_pct": round(100 * kept / count, 1),
        "same_text_pct": round(100 * same_text / count, 1),
        "alignment_head": engine.info.get("alignment_head"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo-placement"))
    parser.add_argument("--guided-weight", type=float, default=0.1)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    result = {}
    for name, weight in (("plain", 0.0), ("guided", args.guided_weight)):
        run = args.out / name
        started = time.perf_counter()
        if not (run / "checkpoint_avg.pt").is_file():
            train(demo_config(run, weight))
        result[name] = {"guided_weight": weight, **placement(run / "checkpoint_avg.pt", args.count)}
        result[name]["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
