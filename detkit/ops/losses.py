"""Sigmoid focal loss (Lin et al., 2017) with a hand-written backward.

Dims: any shape (...), flattened to L elements; a chunk is C <= L consecutive elements.

For binary targets t and logits x, write u = x * (1 - 2t) (the logit of the *wrong* class: -x for a
positive, x for a negative). Then
    1 - p_t = sigmoid(u) =: q,    BCE(x, t) = softplus(u) = relu(u) - log(sigmoid(|u|)),
    loss    = a_t * q**gamma * softplus(u),           a_t = alpha if t = 1 else 1 - alpha
    dloss/dx = (1 - 2t) * a_t * q**gamma * (gamma * (1 - q) * softplus(u) + q).
sigmoid(|u|) = max(q, 1 - q) lies in [0.5, 1], so its log is accurate, and nothing here overflows or
divides: logits of +-100 (or +-1e4) give finite values and gradients.

Speed: torchvision's version materialises about ten full-size intermediates and lets autograd keep
several for the backward. Here forward and backward stream over chunks of C elements with a few
reused scratch buffers that stay in cache (on CPU; on CUDA a chunk is the whole tensor), recomputing
what the backward needs from the logits and targets. torch's softplus/log1p are not vectorised on CPU
(~6 ns per element) while sigmoid/log are, which is why softplus is written through sigmoid and log.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from detkit.ops.boxes import compute_dtype

REDUCTIONS = ("none", "mean", "sum")
# Elements per chunk on CPU (measured best of 2**14..2**21): the few chunk-sized buffers stay in cache.
CPU_CHUNK_ELEMENTS = 1 << 18


def sigmoid_focal_loss(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> torch.Tensor:
    """Focal loss of independent sigmoid classifiers.

    Args:
        inputs: logits, float tensor of any shape (...), any float dtype.
        targets: same shape, 0.0 (negative) or 1.0 (positive); other values are not supported. Gets no gradient.
        alpha: weight of positives (negatives weigh 1 - alpha); alpha < 0 disables the weighting.
        gamma: focusing exponent >= 0 on (1 - p_t).
        reduction: "none" -> (...) per element; "sum" -> scalar; "mean" -> scalar sum / number of elements
            (NaN for empty inputs, like torch.mean).
    Returns:
        float32 (float64 for float64 inputs), computed in that precision whatever the input dtype, also
        under torch.autocast. Equal to torchvision.ops.sigmoid_focal_loss up to float rounding.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must have the same shape")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if targets.requires_grad and torch.is_grad_enabled():
        raise ValueError("sigmoid_focal_loss gives no gradient for targets: pass targets.detach()")
    return _SigmoidFocalLoss.apply(inputs, targets, float(alpha), float(gamma), reduction)


class _SigmoidFocalLoss(torch.autograd.Function):
    """Chunked forward and backward of the focal loss; see the module docstring for the formulas."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float, reduction: str):
        ctx.save_for_backward(inputs, targets)
        ctx.alpha, ctx.gamma, ctx.reduction = alpha, gamma, reduction
        dtype = compute_dtype(inputs)
        logits, labels = inputs.reshape(-1), targets.reshape(-1)  # (L,)
        with torch.autocast(inputs.device.type, enabled=False):
            if reduction == "none":
                loss = torch.empty(logits.shape, dtype=dtype, device=inputs.device)  # (L,)
                for start, end, scratch in _chunks(len(logits), dtype, inputs.device, num_buffers=2):
                    _focal_loss_chunk(logits[start:end].to(dtype), labels[start:end].to(dtype), alpha, gamma,
                                      loss[start:end], scratch)
                return loss.view(inputs.shape)
            chunk_sums = []
            for start, end, scratch in _chunks(len(logits), dtype, inputs.device, num_buffers=3):
                chunk_loss = scratch.pop()
                _focal_loss_chunk(logits[start:end].to(dtype), labels[start:end].to(dtype), alpha, gamma,
                                  chunk_loss, scratch)
                chunk_sums.append(chunk_loss.sum())
            total = torch.stack(chunk_sums).sum() if chunk_sums else torch.zeros((), dtype=dtype, device=inputs.device)
            return total / len(logits) if reduction == "mean" else total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        inputs, targets = ctx.saved_tensors
        dtype = compute_dtype(inputs)
        logits, labels = inputs.reshape(-1), targets.reshape(-1)  # (L,)
        grad_output = grad_output.to(dtype)
        if ctx.reduction == "mean":
            grad_output = grad_output / len(logits)
        per_element = ctx.reduction == "none"
        grad_output = grad_output.reshape(-1) if per_element else grad_output  # (L,) or a scalar
        grad_inputs = torch.empty(logits.shape, dtype=inputs.dtype, device=inputs.device)  # (L,)
        same_dtype = inputs.dtype == dtype
        with torch.autocast(inputs.device.type, enabled=False):
            for start, end, scratch in _chunks(len(logits), dtype, inputs.device, num_buffers=4):
                out = grad_inputs[start:end] if same_dtype else scratch.pop()
                _focal_loss_grad_chunk(logits[start:end].to(dtype), labels[start:end].to(dtype), ctx.alpha, ctx.gamma,
                                       out, scratch)
                out.mul_(grad_output[start:end] if per_element else grad_output)
                if not same_dtype:
                    grad_inputs[start:end] = out
        return grad_inputs.view(inputs.shape), None, None, None, None


def _chunks(length: int, dtype: torch.dtype, device: torch.device, num_buffers: int):
    """Yield (start, end, scratch): consecutive ranges of at most C elements and num_buffers fresh views of
    reused (C,) buffers of the chunk's length (reused across chunks: allocating per chunk costs ~2x)."""
    chunk = CPU_CHUNK_ELEMENTS if device.type == "cpu" else max(length, 1)
    buffers = [torch.empty(min(chunk, length), dtype=dtype, device=device) for _ in range(num_buffers)]
    for start in range(0, length, chunk):
        end = min(start + chunk, length)
        yield start, end, [b[:end - start] for b in buffers]


def _focal_loss_chunk(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float,
                      out: torch.Tensor, scratch: list[torch.Tensor]) -> None:
    """Focal loss of logits, targets (C,) into out (C,), with two (C,) scratch buffers."""
    u = torch.addcmul(logits, logits, targets, value=-2.0, out=scratch[0])  # (C,) x * (1 - 2t)
    q = torch.sigmoid(u, out=scratch[1])  # (C,) 1 - p_t
    _softplus_from_sigmoid(u, q, out)  # (C,) BCE; u is overwritten
    out.mul_(q.pow_(gamma))
    if alpha >= 0:
        out.mul_(torch.mul(targets, 2 * alpha - 1, out=scratch[0]).add_(1 - alpha))  # a_t


def _focal_loss_grad_chunk(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float,
                           out: torch.Tensor, scratch: list[torch.Tensor]) -> None:
    """d loss / d logits of logits, targets (C,) into out (C,), with three (C,) scratch buffers."""
    u = torch.addcmul(logits, logits, targets, value=-2.0, out=scratch[0])  # (C,) x * (1 - 2t)
    q = torch.sigmoid(u, out=scratch[1])  # (C,) 1 - p_t
    bce = _softplus_from_sigmoid(u, q, scratch[2])  # (C,); u is overwritten
    p_t = torch.mul(q, -1.0, out=out).add_(1.0)  # (C,)
    grad = p_t.mul_(bce).mul_(gamma).add_(q)  # (C,) gamma * p_t * BCE + q
    grad.mul_(q.pow_(gamma))
    # (1 - 2t) * a_t is 1 - alpha - t for binary t (1 - 2t without weighting)
    if alpha >= 0:
        grad.mul_(torch.mul(targets, -1.0, out=scratch[0]).add_(1 - alpha))
    else:
        grad.mul_(torch.mul(targets, -2.0, out=scratch[0]).add_(1.0))


def _softplus_from_sigmoid(u: torch.Tensor, q: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """softplus(u) = relu(u) - log(sigmoid(|u|)) into out, given q = sigmoid(u); u is overwritten."""
    one_minus_q = torch.mul(q, -1.0, out=out).add_(1.0)
    log_sigmoid_abs = torch.maximum(one_minus_q, q, out=out).log_()  # log(max(q, 1 - q)) = log(sigmoid(|u|))
    return torch.sub(u.clamp_(min=0), log_sigmoid_abs, out=out)
