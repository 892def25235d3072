"""detkit.ops.losses.sigmoid_focal_loss: hand-computed values, torchvision as the oracle, gradcheck,
extreme logits, half precision and autocast, chunking."""
import math

import pytest
import torch
import torchvision

from detkit.ops import losses as losses_module
from detkit.ops import sigmoid_focal_loss

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def random_case(shape, seed: int, scale: float = 4.0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype)
    targets = (torch.rand(shape, generator=generator) < 0.3).to(dtype)
    return logits, targets


def test_hand_computed_values():
    logits = torch.tensor([0.0, 0.0, 2.0, -1.0])
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # p = sigmoid(x); p_t = p for positives, 1 - p for negatives; loss = a_t (1 - p_t)^2 (-log p_t)
    p2, pm1 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))
    expected = torch.tensor([
        0.25 * 0.5**2 * math.log(2.0),  # 0.0433217
        0.75 * 0.5**2 * math.log(2.0),  # 0.1299651
        0.75 * p2**2 * -math.log(1 - p2),  # a negative scored high: 1.2375586
        0.25 * (1 - pm1) ** 2 * -math.log(pm1),  # a positive scored low: 0.1754671
    ])
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), expected)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, reduction="sum"), expected.sum())
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, reduction="mean"), expected.mean())
    unweighted = expected / torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha=-1.0), unweighted)
    assert torch.allclose(sigmoid_focal_loss(logits, targets),
                          torch.tensor([0.0433217, 0.1299651, 1.2375586, 0.1754671]), atol=1e-6)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.75, 1.5), (0.25, 3.0)])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_values_and_gradients_equal_torchvision(alpha, gamma, reduction):
    logits, targets = random_case((4, 50, 7), seed=1)
    logits.requires_grad_()
    loss = sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    (grad,) = torch.autograd.grad((loss * torch.linspace(0.5, 2.0, loss.numel()).view(loss.shape)).sum(), logits)
    expected_loss = torchvision.ops.sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    (expected_grad,) = torch.autograd.grad(
        (expected_loss * torch.linspace(0.5, 2.0, loss.numel()).view(loss.shape)).sum(), logits)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 0.5), (0.6, 0.0)])
def test_gradcheck_float64(reduction, alpha, gamma):
    logits, targets = random_case((3, 5), seed=2, scale=3.0, dtype=torch.float64)
    logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: sigmoid_focal_loss(x, targets, alpha, gamma, reduction), (logits,))


def test_float64_values_equal_torchvision_tightly():
    logits, targets = random_case((1000,), seed=3, scale=6.0, dtype=torch.float64)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets),
                               torchvision.ops.sigmoid_focal_loss(logits, targets), rtol=1e-12, atol=1e-14)


def test_chunked_computation_equals_one_chunk(monkeypatch):
    """Chunks of 7 elements (and a remainder) give the same loss and gradient as one chunk."""
    logits, targets = random_case((5, 13), seed=4)
    results = []
    for chunk in (1 << 18, 7):
        monkeypatch.setattr(losses_module, "CPU_CHUNK_ELEMENTS", chunk)
        for reduction in ("none", "sum"):
            x = logits.clone().requires_grad_()
            loss = sigmoid_focal_loss(x, targets, reduction=reduction)
            loss.sum().backward()
            results.append((loss.detach(), x.grad))
    for (loss, grad), (chunked_loss, chunked_grad) in zip(results[:2], results[2:]):
        torch.testing.assert_close(chunked_loss, loss)
        torch.testing.assert_close(chunked_grad, grad)


def test_extreme_logits_give_finite_exact_values_and_gradients():
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0, 1e4, -1e4]).requires_grad_()
    targets = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    loss = sigmoid_focal_loss(logits, targets)
    loss.sum().backward()
    # confidently wrong: BCE = |x|, (1 - p_t)^2 = 1 -> a_t * |x|, gradient +-a_t; confidently right: 0
    torch.testing.assert_close(loss.detach(), torch.tensor([75.0, 0.0, 0.0, 25.0, 7500.0, 2500.0]))
    torch.testing.assert_close(logits.grad, torch.tensor([0.75, 0.0, 0.0, -0.25, 0.75, -0.25]))
    assert torch.isfinite(torchvision.ops.sigmoid_focal_loss(logits[:4].detach(), targets[:4])).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    logits, targets = random_case((6, 40), seed=5, scale=8.0, dtype=dtype)
    logits.requires_grad_()
    loss = sigmoid_focal_loss(logits, targets, reduction="sum")
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad.dtype == dtype
    reference = logits.detach().float().requires_grad_()
    expected = torchvision.ops.sigmoid_focal_loss(reference, targets.float(), reduction="sum")
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits.grad, reference.grad.to(dtype))


def test_stable_under_autocast():
    layer = torch.nn.Linear(8, 5)
    features = torch.randn(64, 8, generator=torch.Generator().manual_seed(6)) * 50  # logits far beyond +-10
    targets = (torch.rand(64, 5, generator=torch.Generator().manual_seed(7)) < 0.2).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features)
        assert logits.dtype == torch.bfloat16
        loss = sigmoid_focal_loss(logits, targets, reduction="mean")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, torchvision.ops.sigmoid_focal_loss(logits.float(), targets, reduction="mean"))
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


def test_empty_inputs():
    logits = torch.zeros(0, 80, requires_grad=True)
    targets = torch.zeros(0, 80)
    assert sigmoid_focal_loss(logits, targets).shape == (0, 80)
    total = sigmoid_focal_loss(logits, targets, reduction="sum")
    assert total.item() == 0.0
    total.backward()
    assert logits.grad.shape == (0, 80)
    assert sigmoid_focal_loss(logits, targets, reduction="mean").isnan()  # like torch.mean of nothing


def test_bad_arguments():
    logits, targets = random_case((3, 4), seed=8)
    with pytest.raises(ValueError, match="reduction must be one of"):
        sigmoid_focal_loss(logits, targets, reduction="avg")
    with pytest.raises(ValueError, match="same shape"):
        sigmoid_focal_loss(logits, targets[:2])
    with pytest.raises(ValueError, match="no gradient for targets"):
        sigmoid_focal_loss(logits, targets.requires_grad_())


@requires_cuda
def test_cuda_equals_torchvision():
    logits, targets = random_case((2, 300, 80), seed=9)
    logits, targets = logits.cuda().requires_grad_(), targets.cuda()
    loss = sigmoid_focal_loss(logits, targets, reduction="sum")
    (grad,) = torch.autograd.grad(loss, logits)
    expected = torchvision.ops.sigmoid_focal_loss(logits, targets, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
    with torch.autocast("cuda", dtype=torch.float16):
        assert sigmoid_focal_loss(logits.half(), targets, reduction="sum").dtype == torch.float32
