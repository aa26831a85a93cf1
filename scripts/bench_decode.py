"""Decoding benchmark: sentences/second and target tokens/second for beam 4 and greedy.
Prints one JSON line.

    python scripts/bench_decode.py --checkpoint runs/multi30k-en-de/checkpoint_avg.pt \
        --src ../shared/data/multi30k/test_2016_flickr.en.gz [--peer]

Runs on CPU (fp32 and bf16), and on CUDA (bf16) when present. With --peer and `transformers`
installed, the checkpoint's weights are copied into a same-shape Hugging Face MarianMTModel and
its `generate(num_beams=4)` / greedy decode the same sentences in the same process run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from mtrain.data.sources import read_lines  # noqa: E402
from mtrain.data.tokenizer import EOS, PAD  # noqa: E402
from mtrain.decode import open_translator  # noqa: E402


def to_marian(translator):
    """A MarianMTModel holding the same weights as our model (same post-norm architecture)."""
    from transformers import MarianConfig, MarianMTModel

    model = translator.model
    c = model.config
    vocab = translator.tokenizer.tgt_vocab_size
    cfg = MarianConfig(vocab_size=vocab, d_model=c.d_model, encoder_layers=c.encoder_layers, decoder_layers=c.decoder_layers,
                       encoder_attention_heads=c.heads, decoder_attention_heads=c.heads, encoder_ffn_dim=c.d_ff, decoder_ffn_dim=c.d_ff,
                       activation_function="relu", max_position_embeddings=c.max_positions, scale_embedding=True,
                       pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=2, forced_eos_token_id=None,
                       share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    hf = MarianMTModel(cfg).eval()
    ours = model.state_dict()
    d = c.d_model
    new = {"model.shared.weight": ours["src_embed.weight"], "lm_head.weight": ours["output.weight"],
           "model.encoder.embed_tokens.weight": ours["src_embed.weight"], "model.decoder.embed_tokens.weight": ours["tgt_embed.weight"],
           "model.encoder.embed_positions.weight": model.positions, "model.decoder.embed_positions.weight": model.positions}

    def attention(prefix_hf, prefix):
        w, b = ours[f"{prefix}.in_proj.weight"], ours[f"{prefix}.in_proj.bias"]
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            new[f"{prefix_hf}.{name}.weight"], new[f"{prefix_hf}.{name}.bias"] = w[i * d:(i + 1) * d], b[i * d:(i + 1) * d]
        new[f"{prefix_hf}.out_proj.weight"], new[f"{prefix_hf}.out_proj.bias"] = ours[f"{prefix}.out_proj.weight"], ours[f"{prefix}.out_proj.bias"]

    def copy(hf_name, name):
        new[f"{hf_name}.weight"], new[f"{hf_name}.bias"] = ours[f"{name}.weight"], ours[f"{name}.bias"]

    for i in range(c.encoder_layers):
        p, q = f"model.encoder.layers.{i}", f"encoder.{i}"
        attention(f"{p}.self_attn", f"{q}.self_attn")
        copy(f"{p}.self_attn_layer_norm", f"{q}.sub1.norm"), copy(f"{p}.fc1", f"{q}.ffn.0"), copy(f"{p}.fc2", f"{q}.ffn.2")
        copy(f"{p}.final_layer_norm", f"{q}.sub2.norm")
    for i in range(c.decoder_layers):
        p, q = f"model.decoder.layers.{i}", f"decoder.{i}"
        attention(f"{p}.self_attn", f"{q}.self_attn")
        attention(f"{p}.encoder_attn", f"{q}.cross_attn")
        copy(f"{p}.self_attn_layer_norm", f"{q}.sub1.norm"), copy(f"{p}.encoder_attn_layer_norm", f"{q}.sub2.norm")
        copy(f"{p}.fc1", f"{q}.ffn.0"), copy(f"{p}.fc2", f"{q}.ffn.2"), copy(f"{p}.final_layer_norm", f"{q}.sub3.norm")
    missing, unexpected = hf.load_state_dict(new, strict=False)
    assert not unexpected and set(missing) <= {"final_logits_bias"}, (missing, unexpected)
    return hf


def run_peer(hf, translator, lines, beam, precision, device):
    """HF generate on the same sentences, in batches of the same size as ours (sorted by length)."""
    ids = translator.tokenizer.encode_src(lines)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    budget = max(translator.config.max_tokens // beam, 1)
    tokens = 0
    dtype = torch.bfloat16 if precision == "bf16" else None
    start = time.perf_counter()
    i = 0
    while i < len(order):
        width = len(ids[order[min(i + 1, len(order) - 1)]]) + 1
        n = max(1, budget // width)
        rows = order[i:i + n]
        i += n
        width = max(len(ids[r]) for r in rows) + 1
        src = torch.full((len(rows), width), PAD)
        for j, r in enumerate(rows):
            src[j, : len(ids[r])] = torch.tensor(ids[r])
            src[j, len(ids[r])] = EOS
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = hf.generate(input_ids=src.to(device), attention_mask=(src != PAD).to(device), num_beams=beam,
                              do_sample=False, max_new_tokens=width - 1 + 50, length_penalty=translator.config.lenpen,
                              early_stopping=True if beam > 1 else False)
        tokens += int(((out != PAD) & (out != 2)).sum())
    seconds = time.perf_counter() - start
    return seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--max-tokens", type=int, default=None, help="source tokens per batch (default: the checkpoint's decode.max_tokens)")
    parser.add_argument("--peer", action="store_true")
    args = parser.parse_args()
    lines = read_lines(Path(args.src))
    settings = [("cpu", "fp32"), ("cpu", "bf16")] + ([("cuda", "bf16")] if torch.cuda.is_available() else [])
    results = []
    for device, precision in settings:
        translator = open_translator(Path(args.checkpoint), device, precision, max_tokens=args.max_tokens)
        hf = to_marian(translator).to(translator.device) if args.peer else None
        for beam in (4, 1):
            translator.translate(lines[:16], beam=beam)  # warm-up
            start = time.perf_counter()
            hyps = translator.translate_nbest(lines, beam=beam)
            seconds = time.perf_counter() - start
            tokens = sum(len(h[0].tokens) + 1 for h in hyps)
            row = {"impl": "mtrain", "device": device, "precision": precision, "beam": beam,
                   "batch_max_tokens": translator.config.max_tokens, "sentences": len(lines), "seconds": round(seconds, 2),
                   "sentences_per_s": round(len(lines) / seconds, 1), "tgt_tokens_per_s": round(tokens / seconds)}
            results.append(row)
            if hf is not None:
                seconds, tokens = run_peer(hf, translator, lines, beam, precision, translator.device)
                results.append({**row, "impl": "marian-hf-generate", "seconds": round(seconds, 2),
                                "sentences_per_s": round(len(lines) / seconds, 1), "tgt_tokens_per_s": round(tokens / seconds)})
    print(json.dumps({"bench": "decode", "checkpoint": args.checkpoint, "src": args.src, "threads": torch.get_num_threads(),
                      "cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
