"""Decoding benchmark: every engine on the same checkpoint and sentences, in one run. One JSON line.

    python scripts/bench_decode.py --checkpoint runs/multi30k-en-de/checkpoint_avg.pt \\
        --src ../shared/data/multi30k/test_2016_flickr.en.gz --ref ../shared/data/multi30k/test_2016_flickr.de.gz \\
        [--threads 2] [--beams 4,1] [--no-ctranslate2] [--no-peer]

Rows (each with seconds, sentences/s, target tokens/s and, with --ref, sacreBLEU):
- mtrain's PyTorch engine in fp32 and bf16 (and CUDA bf16 when a GPU is present);
- CTranslate2 float32 and int8, on a model exported by `mtrain export` (conversion and load
  timed apart: `end_to_end_s` = load + translate, as a user of `mtrain translate` meets it);
- Hugging Face `generate()` of the exported MarianMTModel, batches of the same size as mtrain's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from mtrain.data.sources import read_lines  # noqa: E402
from mtrain.deploy.engines import open_engine
from mtrain.evaluation.scores import corpus_scores
from mtrain.special import EOS, PAD  # noqa: E402


def timed_translate(engine, lines: list[str], beam: int) -> tuple[float, list[str], int]:
    engine.translate(lines[:16], beam=beam)  # warm-up
    start = time.perf_counter()
    hyps = engine.translate_nbest(lines, beam=beam)
    seconds = time.perf_counter() - start
    tokens = sum(len(h[0].tokens) + 1 for h in hyps)
    return seconds, [engine.tokenizer.decode_tgt(h[0].tokens) for h in hyps], tokens


def row(name: str, setting: str, beam: int, seconds: float, outputs: list[str], tokens: int, refs, **extra) -> dict:
    result = {
        "engine": name,
        "setting": setting,
        "beam": beam,
        "sentences": len(outputs),
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(outputs) / seconds, 1),
        "tgt_tokens_per_s": round(tokens / seconds),
        **extra,
    }
    if refs is not None:
        result["bleu"] = round(corpus_scores(outputs, [refs])["bleu"], 2)
    return result


def bench_torch(args, lines, refs) -> list[dict]:
    settings = [("cpu", p) for p in args.precisions] if "cpu" in args.devices else []
    settings += [("cuda", "bf16")] if "cuda" in args.devices and torch.cuda.is_available() else []
    rows = []
    for device, precision in settings:
        engine = open_engine(Path(args.checkpoint), device=device, precision=precision, threads=args.threads)
        for beam in args.beams:
            seconds, outputs, tokens = timed_translate(engine, lines, beam)
            rows.append(row("mtrain-torch", f"{device}-{precision}", beam, seconds, outputs, tokens, refs))
    return rows


def ct2_devices(devices: list[str]) -> list[str]:
    """The devices CTranslate2 runs on here: the CPU, and CUDA when its build has CUDA and sees a GPU."""
    import ctranslate2

    return [d for d in devices if d == "cpu" or ctranslate2.get_cuda_device_count() > 0]


def bench_ctranslate2(args, lines, refs, workdir: Path) -> list[dict]:
    from mtrain.deploy.ctranslate2 import export_ctranslate2
    from mtrain.deploy.export import ExportedCheckpoint

    rows = []
    for quantization in ("float32", "int8"):
        start = time.perf_counter()
        out = export_ctranslate2(
            ExportedCheckpoint(Path(args.checkpoint)), workdir / f"ct2-{quantization}", quantization
        )
        convert = time.perf_counter() - start
        for device, beam in [(d, b) for d in ct2_devices(args.devices) for b in args.beams]:
            start = time.perf_counter()
            engine = open_engine(model_dir=out, device=device, threads=args.threads)
            load = time.perf_counter() - start
            seconds, outputs, tokens = timed_translate(engine, lines, beam)
            rows.append(
                row(
                    "ctranslate2",
                    quantization if device == "cpu" else f"{device}-{quantization}",
                    beam,
                    seconds,
                    outputs,
                    tokens,
                    refs,
                    load_s=round(load, 2),
                    end_to_end_s=round(load + seconds, 2),
                    convert_s=round(convert, 2),
                )
            )
    return rows


def bench_huggingface(args, lines, refs, workdir: Path) -> list[dict]:
    """generate() of the exported MarianMTModel on batches of mtrain's size (sorted by length)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from mtrain.deploy.export import ExportedCheckpoint
    from mtrain.deploy.huggingface import export_huggingface

    out = export_huggingface(ExportedCheckpoint(Path(args.checkpoint)), workdir / "hf")
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    reference = open_engine(Path(args.checkpoint), device="cpu")
    ids = reference.tokenizer.encode_src(lines)
    rows = []
    for beam in args.beams:
        outputs, tokens = [""] * len(lines), 0
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        budget = max(reference.config.max_tokens // beam, 1)
        start = time.perf_counter()
        for batch in _batches(order, ids, budget):
            width = max(len(ids[r]) for r in batch) + 1
            src = torch.full((len(batch), width), PAD)
            for j, r in enumerate(batch):
                src[j, : len(ids[r])], src[j, len(ids[r])] = torch.tensor(ids[r], dtype=torch.long), EOS
            with torch.no_grad():
                generated = model.generate(
                    input_ids=src,
                    attention_mask=src != PAD,
                    num_beams=beam,
                    do_sample=False,
                    max_new_tokens=width - 1 + 50,
                )
            tokens += int((generated > 2).sum())
            for r, text in zip(batch, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                outputs[r] = text
        seconds = time.perf_counter() - start
        rows.append(row("huggingface-generate", "fp32 exported MarianMTModel", beam, seconds, outputs, tokens, refs))
    return rows


def _batches(order: list[int], ids: list[list[int]], budget: int):
    batch: list[int] = []
    for r in order:
        if batch and (len(batch) + 1) * (len(ids[r]) + 1) > budget:
            yield batch
            batch = []
        batch.append(r)
    if batch:
        yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--ref", help="reference translations: adds sacreBLEU to every row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beams", default="4,1", help="comma-separated beam sizes")
    parser.add_argument("--devices", default="cpu,cuda", help="cpu, cuda or both (cuda only where there is one)")
    parser.add_argument("--precisions", default="fp32,bf16", help="the torch engine's CPU precisions")
    parser.add_argument("--no-ctranslate2", action="store_true")
    parser.add_argument("--no-peer", action="store_true", help="skip Hugging Face generate")
    args = parser.parse_args()
    args.beams = [int(b) for b in args.beams.split(",")]
    args.devices, args.precisions = args.devices.split(","), args.precisions.split(",")
    torch.set_num_threads(args.threads)
    lines = read_lines(Path(args.src))
    refs = read_lines(Path(args.ref)) if args.ref else None
    results = bench_torch(args, lines, refs)
    with tempfile.TemporaryDirectory() as workdir:
        if not args.no_ctranslate2:
            results += bench_ctranslate2(args, lines, refs, Path(workdir))
        if not args.no_peer:
            results += bench_huggingface(args, lines, refs, Path(workdir))
    print(
        json.dumps(
            {
                "bench": "decode",
                "checkpoint": args.checkpoint,
                "src": args.src,
                "threads": args.threads,
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
