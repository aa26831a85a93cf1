"""Training throughput benchmark on real batches. Prints one JSON line.

    python scripts/bench_train.py --config configs/multi30k.yaml [--steps 10] [--peer]

For each model shape (the config's own, "small", and the paper's "base"), each precision
(fp32 and bf16 on CPU; bf16 on CUDA) it trains --steps optimizer steps on the config's
training batches after 2 warm-up steps and reports the median target tokens/second, the peak
memory, and on CUDA the model FLOPs utilisation (achieved FLOP/s over the GPU's bf16 peak).
With --peer and `transformers` installed, a Hugging Face MarianMTModel of the same shape is
trained on the same batches with the same optimizer and the textbook loss (F.cross_entropy with
label smoothing, what a user of that model writes), in the same process run. With --compile,
mtrain with `train.compile: true` is measured too; its warm-up (compilation) time is reported
as warmup_s and the steady rate over the same later steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mtrain.config_io import load_config
from mtrain.data.prepare import prepare
from mtrain.device import autocast_context, keep_freed_memory  # noqa: E402
from mtrain.distributed import DistInfo  # noqa: E402
from mtrain.training.trainer import Trainer

SHAPES = {
    "config": {},
    "base": {"d_model": 512, "heads": 8, "encoder_layers": 6, "decoder_layers": 6, "d_ff": 2048, "dropout": 0.1},
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core peaks


def train_flops(model, batch) -> float:
    """6 x parameters x tokens for the matrix multiplies, plus attention scores and values."""
    c = model.config
    d = c.d_model
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters()) + model.output.weight.numel()
    n, s, t = batch.src.size(0), batch.src.size(1), batch.tgt_in.size(1)
    dense = 6 * (enc * n * s + dec * n * t)
    attention = 3 * 4 * n * d * (c.encoder_layers * s * s + c.decoder_layers * (t * t + t * s))
    return float(dense + attention)


def marian_peer(model_config, vocab_size: int):
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(
        vocab_size=vocab_size,
        d_model=model_config.d_model,
        encoder_layers=model_config.encoder_layers,
        decoder_layers=model_config.decoder_layers,
        encoder_attention_heads=model_config.heads,
        decoder_attention_heads=model_config.heads,
        encoder_ffn_dim=model_config.d_ff,
        decoder_ffn_dim=model_config.d_ff,
        dropout=model_config.dropout,
        attention_dropout=model_config.attention_dropout,
        activation_dropout=model_config.activation_dropout,
        activation_function="relu",
        max_position_embeddings=model_config.max_positions,
        scale_embedding=True,
        pad_token_id=0,
        eos_token_id=3,
        decoder_start_token_id=2,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
    )
    return MarianMTModel(cfg)


def measure(
    config_path: str, shape: str, precision: str, device: str, steps: int, impl: str, extra: list[str] = ()
) -> dict:
    peer = impl == "peer"
    overrides = (
        [*extra]
        + [f"model.{k}={v}" for k, v in SHAPES[shape].items()]
        + [
            f"train.precision={precision}",
            f"train.device={device}",
            f"train.compile={str(impl == 'compiled').lower()}",
        ]
    )
    config = load_config(config_path, overrides)
    data = prepare(config)
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    trainer = Trainer(config, data, dev, DistInfo())
    trainer.wrap()
    if peer:
        model = marian_peer(config.model, trainer.tokenizer.tgt_vocab_size).to(dev)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)

        def step(micro):
            for b in micro:
                b = b.to(dev)
                with autocast_context(dev, precision):
                    logits = model(input_ids=b.src, attention_mask=b.src != 0, decoder_input_ids=b.tgt_in).logits
                    flat, target = logits.reshape(-1, logits.size(-1)).float(), b.tgt_out.reshape(-1)
                    loss = F.cross_entropy(flat, target, ignore_index=0, label_smoothing=0.1, reduction="sum")
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        step = trainer.train_step
        if dev.type == "cpu":
            keep_freed_memory()  # as `mtrain train` does on CPU
    rates, flops_rates, warmup_s = [], [], 0.0
    for i in range(steps + 2):
        micro = trainer.batches.step(1, i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(micro)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if i < 2:
            warmup_s += seconds
        else:
            rates.append(sum(b.tgt_tokens for b in micro) / seconds)
            flops_rates.append(sum(train_flops(trainer.model, b) for b in micro) / seconds)
    result = {
        "shape": shape,
        "precision": precision,
        "device": device,
        "impl": {"peer": "marian-hf", "compiled": "mtrain-compiled"}.get(impl, "mtrain"),
        "params_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 1),
        "median_tgt_tokens_per_s": round(statistics.median(rates)),
        "warmup_s": round(warmup_s, 1),
        "peak_memory_mb": round(
            (
                torch.cuda.max_memory_allocated()
                if dev.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            )
            / 2**20
        ),
    }
    if dev.type == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        result["gpu"] = name
        if peak:
            result["mfu"] = round(statistics.median(flops_rates) / peak, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/multi30k.yaml")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--shapes", default="config,base")
    parser.add_argument("--peer", action="store_true", help="also train a same-shape Hugging Face MarianMTModel")
    parser.add_argument("--compile", action="store_true", help="also measure mtrain with train.compile: true")
    parser.add_argument("--devices", default="cpu,cuda", help="cpu, cuda or both (cuda only where torch sees one)")
    parser.add_argument("--precisions", default="fp32,bf16", help="CPU precisions to measure (CUDA runs bf16)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="a config override (repeatable)")
    parser.add_argument("--one", nargs=4, metavar=("SHAPE", "PRECISION", "DEVICE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one measurement in a fresh process, so peak memory is its own
        shape, precision, device, impl = args.one
        print(json.dumps(measure(args.config, shape, precision, device, args.steps, impl, args.overrides)))
        return
    devices, shapes = args.devices.split(","), args.shapes.split(",")
    runs = [(s, p, "cpu") for s in shapes for p in args.precisions.split(",")] if "cpu" in devices else []
    if "cuda" in devices and torch.cuda.is_available():
        runs += [(s, "bf16", "cuda") for s in shapes]
    impls = ["mtrain"] + (["compiled"] if args.compile else [])
    if args.peer:
        try:
            import transformers  # noqa: F401

            impls.append("peer")
        except ImportError:
            print("transformers is not installed: no peer run", file=sys.stderr)
    results = []
    for shape, precision, device in runs:
        for impl in impls:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--config",
                    args.config,
                    "--steps",
                    str(args.steps),
                    *[arg for o in args.overrides for arg in ("--set", o)],
                    "--one",
                    shape,
                    precision,
                    device,
                    impl,
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        json.dumps(
            {
                "bench": "train",
                "config": args.config,
                "steps": args.steps,
                "threads": torch.get_num_threads(),
                "cpu": os.cpu_count(),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
