"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), section 3.

Encoder and decoder stacks of N layers; multi-head attention (3.2.2) through
`scaled_dot_product_attention`, so GPUs get fused flash/memory-efficient kernels; position-wise
ReLU feed-forward networks (3.3); embeddings scaled by sqrt(d_model) and shared with the
pre-softmax projection (3.4); sinusoidal positional encodings (3.5); dropout on every sub-layer
output and on embeddings + positions, residual connections and layer normalisation after each
sub-layer (5.4; `pre_norm` moves it before, as most later toolkits do). Two later regularizers
are off by default (the paper has neither): dropout on the attention weights and on the FFN's
hidden activations (fairseq's attention_dropout / activation_dropout).

Training calls `forward` (teacher forcing, causal mask). Search calls `encode` once,
`cross_attention_memory` once, then `decode_step` one token at a time with cached keys and
values: the same weights, the same arithmetic, so both give the same scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mtrain.config import GuidedAlignmentConfig, ModelConfig
from mtrain.special import PAD


def sinusoidal_positions(length: int, d_model: int, layout: str = "interleaved") -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)) (section 3.5);
    with layout "halves" the same values as fairseq and Marian lay them out: every sin, then every cos."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    inv_freq = torch.pow(10000.0, -torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    sin, cos = torch.sin(position * inv_freq), torch.cos(position * inv_freq)
    if layout == "halves":
        return torch.cat([sin, cos], dim=1).float()
    table = torch.zeros(length, d_model, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = sin, cos
    return table.float()


class MultiHeadAttention(nn.Module):
    """Multi-head attention (section 3.2), with one fused input projection for query, key, value.

    Scaled dot-product attention, equation (1):

        Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

    Multi-head attention (section 3.2.2), h heads of d_k = d_v = d_model / h:

        MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

    `in_proj` holds [W^Q; W^K; W^V] for all heads, `out_proj` is W^O; the attention itself is
    `F.scaled_dot_product_attention`, which applies the 1 / sqrt(d_k) scaling and, in training,
    `dropout` to the softmax weights (0 by default: the paper drops sub-layer outputs only). Set `record` to a
    list (mtrain.insight.attention.recording does) and every call appends its weights
    softmax(Q K^T / sqrt(d_k)), (batch, heads, queries, keys), beside the fused computation; set
    `guided_head` (the trainer does, for guided alignment) and each call keeps that head's weights,
    differentiable, in `guided`.
    """

    record: list | None = None
    guided_head: int | None = None  # train.guided_alignment: this head's weights are kept in `guided`
    guided: torch.Tensor | None = None  # (batch, queries, keys), fp32, differentiable

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.d_model, self.dropout = heads, d_model, dropout
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.d_model // self.heads).transpose(1, 2)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the encoder output for cross-attention (computed once per input)."""
        d = self.d_model
        k, v = F.linear(memory, self.in_proj.weight[d:], self.in_proj.bias[d:]).chunk(2, dim=-1)
        return self._split_heads(k), self._split_heads(v)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Self-attention over x when memory_kv is None, else cross-attention to memory_kv.
        With a `cache`, x is the next step(s) and attends to the earlier steps' keys/values too."""
        if memory_kv is None:
            q, k, v = map(self._split_heads, self.in_proj(x).chunk(3, dim=-1))
            if cache is not None:
                k, v = cache.append(k, v)
        else:
            d = self.d_model
            q = self._split_heads(F.linear(x, self.in_proj.weight[:d], self.in_proj.bias[:d]))
            k, v = memory_kv
        if self.record is not None:
            self.record.append(attention_weights(q, k, mask, is_causal))
        if self.guided_head is not None:
            h = self.guided_head
            self.guided = attention_weights(q[:, h : h + 1], k[:, h : h + 1], mask, is_causal)[:, 0]
        y = scaled_dot_product_attention(q, k, v, mask, is_causal, self.dropout if self.training else 0.0)
        batch, _, length, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, self.d_model))


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool, dropout: float = 0.0
) -> torch.Tensor:
    """Equation (1) for (batch, heads, length, d_k) tensors; `mask` is True where a key may be attended,
    `dropout` the probability of dropping an attention weight.

    On CPU two cases beat torch's fused kernel (docs/benchmarks.md has the figures): one query per
    sentence (a decoding step), where two small matmuls are faster than the flash kernel, and bf16
    inputs, where the kernel is slower than in fp32; attention is a small share of the FLOPs, so
    there it runs in fp32 while the projections stay bf16.
    """
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout)
    if q.size(2) == 1 and not is_causal:
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.size(-1))
        if mask is not None:
            scores = scores.masked_fill(~mask, -math.inf)
        weights = F.dropout(scores.softmax(-1), dropout) if dropout else scores.softmax(-1)
        return weights.to(v.dtype) @ v
    if q.dtype == torch.bfloat16:
        y = F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=mask, is_causal=is_causal, dropout_p=dropout
        )
        return y.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout)


MemoryKV = list[tuple[torch.Tensor, torch.Tensor]]  # every decoder layer's cross-attention keys and values


class KVCache:
    """One decoder layer's self-attention keys and values of the steps decoded so far.

    The buffers have room for `capacity` steps: a step writes its slot instead of concatenating.
    Reordering the hypotheses (beam search keeps the best extensions, finished sentences leave)
    gathers the kept rows into a dense buffer with room for one more step, so that the next step
    writes in place again and attention reads dense (batch, heads, steps, d_k) tensors: a prefix
    view of a larger buffer would cost a hidden copy in every CPU matmul (measured: much slower
    in bf16), and beam search reorders at every step anyway.
    """

    def __init__(self, capacity: int):
        self.capacity, self.length = capacity, 0
        self.buffers: torch.Tensor | None = None  # (2, batch, heads, room, d_k): keys, values

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new steps' keys/values; all steps' keys/values so far."""
        end = self.length + k.size(2)
        if self.buffers is None or end > self.buffers.size(3):
            self._grow(k, max(end, self.capacity, 2 * self.length))
        self.buffers[0, :, :, self.length : end] = k
        self.buffers[1, :, :, self.length : end] = v
        self.length = end
        kept = self.buffers[:, :, :, :end]
        return kept[0], kept[1]

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder) the given batch rows."""
        if self.buffers is None:
            return
        _, _, heads, _, d_k = self.buffers.shape
        dense = self.buffers.new_empty(2, rows.numel(), heads, self.length + 1, d_k)
        torch.index_select(self.buffers[:, :, :, : self.length], 1, rows, out=dense[:, :, :, : self.length])
        self.buffers = dense

    def _grow(self, k: torch.Tensor, room: int) -> None:
        batch, heads, _, d_k = k.shape
        old, self.buffers = self.buffers, k.new_empty(2, batch, heads, room, d_k)
        if old is not None:
            self.buffers[:, :, :, : self.length] = old[:, :, :, : self.length]


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_k)) of equation (1), with the padding mask (True = attend) or the causal mask."""
    scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    if is_causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).triu(1), -math.inf)
    return scores.softmax(-1)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (section 5.4): zero each element with probability p, scale the rest by 1/(1-p).

    F.dropout draws a CPU mask with one 64-bit random number per element, on one core (its
    vectorised generator serves Intel CPUs only), a visible share of a CPU training step
    (docs/benchmarks.md). Each 64-bit
    draw gives four 16-bit uniforms instead, with p rounded to a multiple of 2^-16."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    keep_levels = round((1 - p) * 65536)
    words = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64)
    uniform16 = words.view(torch.int16)[: x.numel()].view(x.shape)  # each in [-32768, 32767]
    return x * (uniform16 < keep_levels - 32768).to(x.dtype).mul_(65536 / keep_levels)


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU}  # model.activation's choices


class FeedForward(nn.Sequential):
    """FFN(x) = max(0, x W1 + b1) W2 + b2, equation (2); in training, `dropout` on max(0, x W1 + b1).
    Later models swap the ReLU for GELU or swish (x * sigmoid(x): Marian's OPUS-MT models)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__(nn.Linear(d_model, d_ff), ACTIVATIONS[activation](), nn.Linear(d_ff, d_model))
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[2](dropout(self[1](self[0](x)), self.dropout, self.training))


class SubLayer(nn.Module):
    """Residual connection, dropout and layer norm around one sub-layer: post-norm computes
    LayerNorm(x + Dropout(f(x))) as in the paper, pre-norm x + Dropout(f(LayerNorm(x)))."""

    def __init__(self, d_model: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norm, self.dropout, self.pre_norm = nn.LayerNorm(d_model), Dropout(dropout), pre_norm

    def forward(self, x: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.pre_norm:
            return x + self.dropout(f(self.norm(x)))
        return self.norm(x + self.dropout(f(x)))


class EncoderLayer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(c.d_model, c.heads, c.attention_dropout)
        self.ffn = FeedForward(c.d_model, c.d_ff, c.activation_dropout, c.activation)
        self.sub1, self.sub2 = SubLayer(c.d_model, c.dropout, c.pre_norm), SubLayer(c.d_model, c.dropout, c.pre_norm)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        x = self.sub1(x, lambda h: self.self_attn(h, mask=src_mask))
        return self.sub2(x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(c.d_model, c.heads, c.attention_dropout)
        self.cross_attn = MultiHeadAttention(c.d_model, c.heads, c.attention_dropout)
        self.ffn = FeedForward(c.d_model, c.d_ff, c.activation_dropout, c.activation)
        self.sub1, self.sub2, self.sub3 = (SubLayer(c.d_model, c.dropout, c.pre_norm) for _ in range(3))

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        src_mask: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        # Teacher forcing uses the causal mask; one-step decoding attends to all cached steps.
        x = self.sub1(x, lambda h: self.self_attn(h, is_causal=cache is None, cache=cache))
        x = self.sub2(x, lambda h: self.cross_attn(h, memory_kv=memory_kv, mask=src_mask))
        return self.sub3(x, self.ffn)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed_scale = math.sqrt(d)
        self.src_embed = nn.Embedding(src_vocab_size, d, padding_idx=PAD)
        self.tgt_embed = (
            self.src_embed if config.tie_embeddings == "all" else nn.Embedding(tgt_vocab_size, d, padding_idx=PAD)
        )
        self.output = nn.Linear(d, tgt_vocab_size, bias=config.output_bias)
        self.register_buffer(
            "positions", sinusoidal_positions(config.max_positions, d, config.positions), persistent=False
        )
        self.dropout = Dropout(config.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        # Pre-norm leaves the last sub-layer's output unnormalised; one final norm per stack fixes that.
        self.encoder_norm = nn.LayerNorm(d) if config.pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if config.pre_norm else nn.Identity()
        self._init_weights()
        if config.tie_embeddings in ("all", "decoder"):
            self.output.weight = self.tgt_embed.weight

    def guided_attention(self, guided: GuidedAlignmentConfig) -> MultiHeadAttention | None:
        """The cross-attention of train.guided_alignment's layer, set to keep its head's weights;
        None when guided alignment is off."""
        if not guided.is_on():
            return None
        module = self.decoder[(guided.layer or len(self.decoder)) - 1].cross_attn
        module.guided_head = guided.head
        return module

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=self.config.d_model**-0.5)
                nn.init.zeros_(module.weight[PAD])

    def _embed(self, embedding: nn.Embedding, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        positions = self.positions[offset : offset + tokens.size(1)]
        return self.dropout(embedding(tokens) * self.embed_scale + positions)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (batch, src_len, d) and the padding mask (batch, 1, 1, src_len), True = attend."""
        src_mask = (src != PAD)[:, None, None, :]
        x = self._embed(self.src_embed, src)
        for layer in self.encoder:
            x = layer(x, src_mask)
        return self.encoder_norm(x), src_mask

    def cross_attention_memory(self, memory: torch.Tensor) -> MemoryKV:
        """Every decoder layer's cross-attention keys/values of the encoder output."""
        return [layer.cross_attn.memory_kv(memory) for layer in self.decoder]

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory_kv: MemoryKV,
        src_mask: torch.Tensor,
        caches: list[KVCache] | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """Decoder states for `tgt_in`; with `caches`, tgt_in is the next step(s) after `offset` earlier ones."""
        x = self._embed(self.tgt_embed, tgt_in, offset)
        for i, layer in enumerate(self.decoder):
            x = layer(x, memory_kv[i], src_mask, caches[i] if caches is not None else None)
        return self.decoder_norm(x)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (batch, tgt_len, tgt_vocab)."""
        memory, src_mask = self.encode(src)
        return self.output(self.decode(tgt_in, self.cross_attention_memory(memory), src_mask))

    def cross_attention(self, src: torch.Tensor, tgt_in: torch.Tensor, layer: int) -> torch.Tensor:
        """Decoder layer `layer`'s (from 1) cross-attention weights (batch, heads, tgt_len, src_len),
        teacher-forced, running the decoder only that far (alignments need no output projection)."""
        memory, src_mask = self.encode(src)
        x = self._embed(self.tgt_embed, tgt_in)
        module = self.decoder[layer - 1].cross_attn
        module.record = []
        try:
            for decoder_layer in self.decoder[:layer]:
                x = decoder_layer(x, decoder_layer.cross_attn.memory_kv(memory), src_mask)
            return module.record[0]
        finally:
            module.record = None

    def decode_step(
        self, tokens: torch.Tensor, memory_kv: MemoryKV, src_mask: torch.Tensor, caches: list[KVCache], step: int
    ) -> torch.Tensor:
        """Log-probabilities (batch, tgt_vocab) of the next token after `tokens` (batch, 1) at position `step`."""
        x = self.decode(tokens, memory_kv, src_mask, caches, offset=step)
        return F.log_softmax(self.output(x[:, -1]), dim=-1, dtype=torch.float32)
