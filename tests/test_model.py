"""The Transformer: parameter count, masking, and the paper's building blocks."""

from __future__ import annotations

import math

import pytest
import torch

from mtrain.config import ModelConfig
from mtrain.model.transformer import KVCache, Transformer, dropout, sinusoidal_positions
from mtrain.special import PAD


def test_base_model_parameter_count_matches_hand_count():
    d, ff, n, vocab = 512, 2048, 6, 37000
    attention = 4 * d * d + 4 * d  # W_q, W_k, W_v, W_o and their biases
    ffn = d * ff + ff + ff * d + d
    norm = 2 * d
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    embeddings = vocab * d  # one matrix: source, target and pre-softmax projection (section 3.4)
    expected = embeddings + n * encoder_layer + n * decoder_layer
    model = Transformer(ModelConfig(), vocab, vocab)
    assert sum(p.numel() for p in model.parameters()) == expected == 63_082_496  # the paper rounds its variant to 65M


def test_tying_options():
    untied = Transformer(
        ModelConfig(d_model=32, heads=4, d_ff=64, encoder_layers=1, decoder_layers=1, tie_embeddings="none"), 50, 60
    )
    decoder = Transformer(
        ModelConfig(d_model=32, heads=4, d_ff=64, encoder_layers=1, decoder_layers=1, tie_embeddings="decoder"), 50, 60
    )
    assert untied.output.weight is not untied.tgt_embed.weight and untied.src_embed is not untied.tgt_embed
    assert decoder.output.weight is decoder.tgt_embed.weight and decoder.src_embed.weight.shape[0] == 50


def test_positional_encoding_formula():
    table = sinusoidal_positions(50, 16)
    pos, i = 17, 3
    assert table[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 16)), abs=1e-6)
    assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 16)), abs=1e-6)


@pytest.fixture(params=[False, True], ids=["post-norm", "pre-norm"])
def model(request):
    torch.manual_seed(0)
    config = ModelConfig(
        d_model=32, heads=4, d_ff=64, encoder_layers=2, decoder_layers=2, dropout=0.0, pre_norm=request.param
    )
    return Transformer(config, 40, 40).eval()


def test_padding_changes_nothing(model):
    src = torch.tensor([[5, 6, 7, 3]])
    tgt = torch.tensor([[2, 8, 9, 10]])
    alone = model(src, tgt)
    padded_src = torch.tensor([[5, 6, 7, 3, PAD, PAD], [11, 12, 13, 14, 15, 3]])
    padded_tgt = torch.tensor([[2, 8, 9, 10, PAD], [2, 16, 17, 18, 19]])
    batched = model(padded_src, padded_tgt)
    torch.testing.assert_close(batched[0, :4], alone[0], rtol=1e-5, atol=1e-5)


def test_future_target_tokens_change_nothing_before_them(model):
    src = torch.tensor([[5, 6, 7, 3]])
    a = model(src, torch.tensor([[2, 8, 9, 10, 11]]))
    b = model(src, torch.tensor([[2, 8, 9, 30, 31]]))
    torch.testing.assert_close(a[0, :3], b[0, :3])
    assert not torch.allclose(a[0, 3], b[0, 3])


def test_source_tokens_do_matter(model):
    tgt = torch.tensor([[2, 8, 9]])
    assert not torch.allclose(model(torch.tensor([[5, 6, 3]]), tgt), model(torch.tensor([[5, 7, 3]]), tgt))


def test_cached_one_step_decoding_equals_teacher_forcing(model):
    # The cache starts too small (capacity 2) so that it must grow mid-sentence.
    src, tgt = torch.tensor([[5, 6, 7, 3], [8, 9, 3, PAD]]), torch.tensor([[2, 8, 9, 10, 11], [2, 12, 13, 14, 15]])
    expected = torch.log_softmax(model(src, tgt), -1)
    memory, src_mask = model.encode(src)
    memory_kv, caches = model.cross_attention_memory(memory), [KVCache(2) for _ in model.decoder]
    for step in range(tgt.size(1)):
        logp = model.decode_step(tgt[:, step : step + 1], memory_kv, src_mask, caches, step)
        torch.testing.assert_close(logp, expected[:, step], rtol=1e-5, atol=1e-5)


def test_cache_reorders_rows_and_the_next_step_writes_in_place():
    cache = KVCache(capacity=4)
    steps = [torch.arange(6.0).view(3, 1, 1, 2) + 10 * t for t in range(2)]
    for keys in steps:
        cache.append(keys, -keys)
    cache.select(torch.tensor([2, 2, 0]))
    cache.select(torch.tensor([1, 0]))  # rows of the reordered batch: old rows 2 and 2
    pointer = cache.buffers.data_ptr()
    keys, values = cache.append(steps[0][:2] + 100, -steps[0][:2] - 100)
    assert cache.buffers.data_ptr() == pointer and keys.is_contiguous()
    assert keys[:, 0, :, 0].tolist() == [[4, 14, 100], [4, 14, 102]]
    torch.testing.assert_close(values, -keys)


def test_attention_and_activation_dropout_change_training_only():
    shape = dict(d_model=32, heads=4, d_ff=64, encoder_layers=2, decoder_layers=2, dropout=0.1)
    torch.manual_seed(0)
    off = Transformer(ModelConfig(**shape), 40, 40)
    on = Transformer(ModelConfig(**shape, attention_dropout=0.3, activation_dropout=0.3), 40, 40)
    assert off.state_dict().keys() == on.state_dict().keys()  # the same checkpoints either way
    on.load_state_dict(off.state_dict())
    src, tgt = torch.randint(4, 40, (3, 7)), torch.randint(4, 40, (3, 5))

    def forward(model, seed):
        torch.manual_seed(seed)
        return model(src, tgt)

    assert torch.equal(forward(off.eval(), 1), forward(on.eval(), 1))  # evaluation: no dropout at all
    assert torch.equal(forward(off.train(), 1), forward(off.train(), 1))
    assert not torch.allclose(forward(off.train(), 1), forward(on.train(), 1))
    # each key alone changes training, on the self-attention/cross-attention and the FFN paths
    for key in ("attention_dropout", "activation_dropout"):
        one = Transformer(ModelConfig(**shape, **{key: 0.3}), 40, 40)
        one.load_state_dict(off.state_dict())
        assert not torch.allclose(forward(off.train(), 2), forward(one.train(), 2))


def test_dropout_drops_at_rate_p_keeps_the_expectation_and_follows_the_seed():
    x = torch.ones(1000, 1000, dtype=torch.bfloat16, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.2, training=True)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(0.2, abs=0.002)
    assert set(y.unique().tolist()) == {0.0, 1.25}  # kept elements scaled by 1 / (1 - p)
    assert y.float().mean().item() == pytest.approx(1.0, abs=0.01)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient flows through the kept elements only
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.2, training=True), y)
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0, training=True) is x
    small = dropout(torch.ones(3, 5), 0.5, training=True)  # sizes that are not a multiple of four
    assert small.shape == (3, 5) and set(small.unique().tolist()) <= {0.0, 2.0}
