"""The label-smoothed loss: the hand computation, F.cross_entropy's values and gradients, chunking,
the gradient left in the logits' memory; and the CPU memory setting that the chunking relies on."""

from __future__ import annotations

import math
import resource

import pytest
import torch
import torch.nn.functional as F

import mtrain.model.loss
from mtrain.device import keep_freed_memory
from mtrain.model.loss import label_smoothed_loss
from mtrain.special import PAD


def test_label_smoothing_matches_hand_computation():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0], [0.5, 0.5, 0.5, 0.5]]])
    target = torch.tensor([[1, 0]])  # the second position is padding
    logp = [2.0 - math.log(sum(math.exp(x) for x in (2.0, 1.0, 0.0, -1.0))) - k for k in range(4)]
    nll = -logp[1]
    smooth = -sum(logp) / 4
    loss, got_nll = label_smoothed_loss(logits, target, 0.1)
    assert got_nll.item() == pytest.approx(nll, rel=1e-6)
    assert loss.item() == pytest.approx(0.9 * nll + 0.1 * smooth, rel=1e-6)
    assert label_smoothed_loss(logits, target, 0.0)[0].item() == pytest.approx(nll, rel=1e-6)


def _reference(hidden, weight, target, epsilon):
    """The textbook computation, through F.cross_entropy, in fp32."""
    logits = (hidden @ weight.t()).float().reshape(-1, weight.size(0))
    kwargs = dict(ignore_index=PAD, reduction="sum")
    loss = F.cross_entropy(logits, target.reshape(-1), label_smoothing=epsilon, **kwargs)
    return loss, F.cross_entropy(logits, target.reshape(-1), **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_elements", [1 << 21, 100, 1])  # one chunk, several rows, one row each
@pytest.mark.parametrize("overwrite", [False, True])
def test_values_and_gradients_equal_f_cross_entropy(monkeypatch, dtype, chunk_elements, overwrite):
    monkeypatch.setattr(mtrain.model.loss, "CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16, dtype=dtype)
    weight = torch.randn(50, 16, dtype=dtype, requires_grad=True)
    target = torch.randint(4, 50, (3, 7))
    target[0, 5:] = PAD
    reference_weight = weight.detach().clone().requires_grad_()
    loss, nll = label_smoothed_loss(hidden @ weight.t(), target, 0.1, overwrite_logits=overwrite)
    ref_loss, ref_nll = _reference(hidden, reference_weight, target, 0.1)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(nll, ref_nll, rtol=1e-5, atol=1e-4)
    (loss * 0.37).backward()
    (ref_loss * 0.37).backward()
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(weight.grad, reference_weight.grad, **tolerance)
    assert not nll.requires_grad


def test_overwrite_logits_leaves_the_gradient_in_their_memory_and_only_then():
    torch.manual_seed(0)
    weight = torch.randn(30, 8, requires_grad=True)
    hidden, target = torch.randn(5, 8), torch.randint(4, 30, (5,))
    grads = {}
    for overwrite in (False, True):
        logits = hidden @ weight.t()
        logits.retain_grad()
        before = logits.detach().clone()
        label_smoothed_loss(logits, target, 0.1, overwrite_logits=overwrite)[0].backward()
        grads[overwrite] = logits.grad.clone()
        assert torch.equal(logits.detach(), logits.grad if overwrite else before)
    torch.testing.assert_close(grads[True], grads[False])
    # softmax minus the smoothed one-hot target: each row of the gradient sums to zero
    torch.testing.assert_close(grads[False].sum(-1), torch.zeros(5), atol=1e-6, rtol=0)


def test_freed_memory_is_reused_instead_of_faulted_in_again():
    if not keep_freed_memory():
        pytest.skip("not glibc: malloc is left alone")
    block = 64 << 20  # like a step's logits; glibc's defaults map such a block afresh, and fault it in, every time

    def faults_for_one_block() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(block // 4).sum()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    for _ in range(3):  # the first allocations grow the heap
        faults_for_one_block()
    # the best of three: the host may reclaim idle pages now and then
    assert min(faults_for_one_block() for _ in range(3)) < (block // 4096) // 10
