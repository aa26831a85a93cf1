"""One table between mtrain's weight names and a MarianMTModel's, read in both directions: the
Hugging Face export (`to_marian`) and `mtrain import` (`from_marian`).

Each layer's entry says how the residual stream enters the weight: "in" (a linear map that reads
the stream: its input columns follow the stream's order), "out" (a map or a layer norm that
writes it: its rows and bias follow the order), "qkv" (mtrain's one in_proj is Marian's q_proj,
k_proj and v_proj stacked; all three read the stream). The order matters only between position
layouts: Marian's sinusoidal table puts every sin first, then every cos ("halves"); the paper's
interleaves them. A model with `model.positions: interleaved` is exported with its residual
stream permuted into Marian's order (`stream_order`), which changes no output; a halves model,
which every imported model is, maps one to one, so an import keeps Marian's tensors bit for bit.
"""

from __future__ import annotations

import torch

from mtrain.config import ModelConfig


def layer_table(stack: str, i: int) -> list[tuple[str, str, str]]:
    """(mtrain name, Marian name, how the stream enters) for the weights of one layer."""
    ours, theirs = f"{stack}.{i}", f"model.{stack}.layers.{i}"
    table = [
        (f"{ours}.self_attn.in_proj", f"{theirs}.self_attn", "qkv"),
        (f"{ours}.self_attn.out_proj", f"{theirs}.self_attn.out_proj", "out"),
        (f"{ours}.sub1.norm", f"{theirs}.self_attn_layer_norm", "out"),
    ]
    if stack == "decoder":
        table += [
            (f"{ours}.cross_attn.in_proj", f"{theirs}.encoder_attn", "qkv"),
            (f"{ours}.cross_attn.out_proj", f"{theirs}.encoder_attn.out_proj", "out"),
            (f"{ours}.sub2.norm", f"{theirs}.encoder_attn_layer_norm", "out"),
        ]
    return table + [
        (f"{ours}.ffn.0", f"{theirs}.fc1", "in"),
        (f"{ours}.ffn.2", f"{theirs}.fc2", "out"),
        (f"{ours}.sub{3 if stack == 'decoder' else 2}.norm", f"{theirs}.final_layer_norm", "out"),
    ]


def model_table(m: ModelConfig) -> list[tuple[str, str, str]]:
    """The table of every layer of both stacks."""
    return [
        entry
        for stack, count in (("encoder", m.encoder_layers), ("decoder", m.decoder_layers))
        for i in range(count)
        for entry in layer_table(stack, i)
    ]


def stream_order(m: ModelConfig) -> torch.Tensor:
    """For each of Marian's residual-stream dimensions, the mtrain dimension it is: [0, 2, 4, ...,
    1, 3, 5, ...] for an interleaved table (sin dimensions first, then cos), the identity for halves.
    Layer norm, attention and the feed-forward networks are equivariant to a fixed permutation of
    the stream, so permuting every weight that touches it changes no output."""
    if m.positions == "halves":
        return torch.arange(m.d_model)
    return torch.cat([torch.arange(0, m.d_model, 2), torch.arange(1, m.d_model, 2)])


def _moved(tensor: torch.Tensor, kind: str, order: torch.Tensor, is_bias: bool) -> torch.Tensor:
    """`tensor` with the stream's dimensions taken in `order` (columns of an "in" weight; rows and
    bias of an "out" one)."""
    if kind == "out":
        return tensor[order]
    return tensor if is_bias else tensor[:, order]


def to_marian(weights: dict[str, torch.Tensor], m: ModelConfig) -> dict[str, torch.Tensor]:
    """mtrain's layer weights under Marian's names, in Marian's stream order."""
    order, d, out = stream_order(m), m.d_model, {}
    for ours, theirs, kind in model_table(m):
        for part in ("weight", "bias"):
            tensor = _moved(weights[f"{ours}.{part}"], kind, order, part == "bias")
            if kind == "qkv":
                for j, projection in enumerate(("q_proj", "k_proj", "v_proj")):
                    out[f"{theirs}.{projection}.{part}"] = tensor[j * d : (j + 1) * d]
            else:
                out[f"{theirs}.{part}"] = tensor
    return out


def from_marian(hf: dict[str, torch.Tensor], m: ModelConfig) -> dict[str, torch.Tensor]:
    """Marian's layer weights under mtrain's names, in mtrain's stream order (the inverse of `to_marian`)."""
    order, out = torch.argsort(stream_order(m)), {}
    for ours, theirs, kind in model_table(m):
        for part in ("weight", "bias"):
            if kind == "qkv":
                tensor = torch.cat([hf[f"{theirs}.{p}.{part}"] for p in ("q_proj", "k_proj", "v_proj")])
            else:
                tensor = hf[f"{theirs}.{part}"]
            out[f"{ours}.{part}"] = _moved(tensor, kind, order, part == "bias")
    return out
