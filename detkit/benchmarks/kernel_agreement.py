"""detkit.ops on a CUDA device against the same calls on the CPU, on fresh random inputs, at stated tolerances:
the ``ops`` step of the GPU check (in its dry run, the CPU against a second CPU run). One printed line per case.

Exact equality where the result is a choice (NMS indices, matches, anchors): NMS gets boxes on an integer grid
(areas, intersections and unions exact in float32, so float32 and float64 IoUs decide every threshold the same
way) and distinct scores. Elsewhere the error is max|device - cpu| / max|cpu|: float32 elementwise kernels (IoU,
box coding, focal loss) within 1e-6 (a few ulps: libm's exp/log differ by 1-2 ulps), sums and RoIAlign's backward
(CUDA accumulates with atomics, in another order) within 1e-5. NaN never passes.

Boxes: (N, 4) float32 xyxy absolute pixels.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from detkit.ops import (
    AnchorGenerator,
    BoxCoder,
    Matcher,
    batched_nms,
    box_iou,
    generalized_box_iou,
    nms,
    roi_align,
    sigmoid_focal_loss,
)


class Comparison:
    """The inputs (one seeded generator, drawn in a fixed order) and the verdicts of one comparison run."""

    def __init__(self, device: str, seed: int):
        self.device, self.failures = device, 0
        self.generator = torch.Generator().manual_seed(seed)

    def report(self, kernel: str, case: str, error: float | None, tolerance: float | None, ok: bool) -> None:
        """Print one case's line (error and tolerance "exact" when None) and count it if it fails."""
        self.failures += not ok
        err = "exact" if error is None else f"{error:.2e}"
        tol = "exact" if tolerance is None else f"{tolerance:.0e}"
        print(f"{kernel:<22}{case:<36}{err:>12}{tol:>12}  {'PASS' if ok else 'FAIL'}", flush=True)

    def close(self, kernel: str, case: str, on_device: torch.Tensor, on_cpu: torch.Tensor, tolerance: float) -> None:
        """Same shape and dtype, finite, and max |device - cpu| / max |cpu| <= tolerance."""
        on_device, on_cpu = on_device.detach().cpu(), on_cpu.detach()
        if on_device.shape != on_cpu.shape or on_device.dtype != on_cpu.dtype:
            self.report(kernel, f"{case} {tuple(on_device.shape)}/{tuple(on_cpu.shape)} {on_device.dtype}/"
                        f"{on_cpu.dtype}", math.inf, tolerance, False)
            return
        a, b = on_device.double(), on_cpu.double()
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            self.report(kernel, case + " (non-finite values)", math.nan, tolerance, False)
            return
        scale = b.abs().max().item() if b.numel() else 0.0
        error = (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item() if a.numel() else 0.0
        self.report(kernel, case, error, tolerance, error <= tolerance)

    def equal(self, kernel: str, case: str, on_device: torch.Tensor, on_cpu: torch.Tensor) -> None:
        """Same shape and values."""
        on_device = on_device.cpu()
        same = on_device.shape == on_cpu.shape and torch.equal(on_device, on_cpu)
        self.report(kernel, case if same else f"{case} ({len(on_device)} vs {len(on_cpu)} values)", None, None, same)

    def runs(self, function: Callable[[str], tuple]) -> tuple[tuple, tuple]:
        """(``function(device)``, ``function("cpu")``): on the CPU alone, two CPU runs, the first in the device's
        place."""
        on_device = function(self.device)
        return on_device, function("cpu")

    def float_boxes(self, n: int, extent: float = 1000.0, max_size: float = 200.0) -> torch.Tensor:
        """(n, 4) boxes with corners in [0, extent), sides in [0, max_size); every 7th has zero width."""
        top_left = torch.rand(n, 2, generator=self.generator) * extent
        size = torch.rand(n, 2, generator=self.generator) * max_size
        size[::7, 0] = 0  # degenerate boxes must give 0, not NaN
        return torch.cat([top_left, top_left + size], dim=1)

    def grid_boxes(self, n: int, extent: int = 600, max_size: int = 120) -> torch.Tensor:
        """(n, 4) boxes with whole-pixel corners: exact areas and intersections in float32."""
        top_left = torch.randint(0, extent, (n, 2), generator=self.generator)
        size = torch.randint(1, max_size, (n, 2), generator=self.generator)
        return torch.cat([top_left, top_left + size], dim=1).float()

    def distinct_scores(self, n: int) -> torch.Tensor:
        """(n,) scores in (0, 1], no two equal."""
        return (torch.randperm(n, generator=self.generator).float() + 1) / n


def compare_iou(c: Comparison) -> None:
    """box_iou / generalized_box_iou: float32, values in [0, 1] / [-1, 1]."""
    b1, b2 = c.float_boxes(700), c.float_boxes(3000)
    d = c.device
    c.close("box_iou", "700 x 3000 float32", box_iou(b1.to(d), b2.to(d)), box_iou(b1, b2), 1e-6)
    c.close("box_iou", "700 x 3000 from float16", box_iou(b1.half().to(d), b2.half().to(d)),
            box_iou(b1.half(), b2.half()), 1e-6)
    c.close("generalized_box_iou", "700 x 3000 float32", generalized_box_iou(b1.to(d), b2.to(d)),
            generalized_box_iou(b1, b2), 1e-6)


def compare_nms(c: Comparison) -> None:
    """nms / batched_nms: the CPU takes its blocked (N >= 1000) and per-class-slice paths, CUDA the kernel."""
    d = c.device
    for n in (500, 4000):
        boxes, scores = c.grid_boxes(n), c.distinct_scores(n)
        labels = torch.randint(0, 5, (n,), generator=c.generator)
        for threshold in (0.5, 0.7):
            c.equal("nms", f"N={n} iou>{threshold}", nms(boxes.to(d), scores.to(d), threshold),
                    nms(boxes, scores, threshold))
            c.equal("batched_nms", f"N={n} 5 classes iou>{threshold}",
                    batched_nms(boxes.to(d), scores.to(d), labels.to(d), threshold),
                    batched_nms(boxes, scores, labels, threshold))


def compare_matcher(c: Comparison) -> None:
    """Matcher on the same IoU matrix on both: ties (quantised IoU) and continuous values; both paths."""
    quantised = torch.randint(0, 20, (30, 5000), generator=c.generator).float() / 20
    continuous = box_iou(c.float_boxes(40, 500, 150), c.float_boxes(20000, 500, 150))
    for label, iou in (("30 x 5000 quantised", quantised), ("40 x 20000 box IoUs", continuous)):
        for high, low, low_quality in ((0.5, 0.4, True), (0.7, 0.3, True), (0.5, 0.5, False)):
            matcher = Matcher(high, low, low_quality)
            c.equal("Matcher", f"{label} {high}/{low}/{'lq' if low_quality else '-'}", matcher(iou.to(c.device)),
                    matcher(iou))


def compare_box_coder(c: Comparison) -> None:
    """BoxCoder: encode (log), decode (exp, clamp), decode's gradient."""
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    one_pixel = torch.tensor([0, 0, 1, 1])
    gt, anchors = c.float_boxes(20000) + one_pixel, c.float_boxes(20000) + one_pixel
    c.close("BoxCoder.encode", "20000 boxes", coder.encode(gt.to(c.device), anchors.to(c.device)),
            coder.encode(gt, anchors), 1e-6)
    deltas = torch.randn(20000, 4, generator=c.generator) * 2
    deltas[::50] *= 30  # past bbox_xform_clip
    upstream = torch.randn(20000, 4, generator=c.generator)

    def decode(on: str) -> tuple[torch.Tensor, torch.Tensor]:
        d = deltas.to(on).requires_grad_()
        decoded = coder.decode(d, anchors.to(on))
        (decoded * upstream.to(on)).sum().backward()
        return decoded.detach(), d.grad

    on_device, on_cpu = c.runs(decode)
    c.close("BoxCoder.decode", "20000 boxes, 1/50 clamped", on_device[0], on_cpu[0], 1e-6)
    c.close("BoxCoder.decode bwd", "grad of deltas", on_device[1], on_cpu[1], 1e-6)


def compare_focal_loss(c: Comparison) -> None:
    """sigmoid_focal_loss: forward (none, sum), backward, extreme logits, bf16 logits."""
    logits = torch.randn(64, 3024, 3, generator=c.generator) * 4
    logits.view(-1)[::997] = 100.0
    logits.view(-1)[::1009] = -100.0
    targets = (torch.rand(logits.shape, generator=c.generator) < 0.02).float()
    weight = torch.rand(logits.shape, generator=c.generator)

    def losses(on: str) -> tuple[torch.Tensor, ...]:
        x = logits.to(on).requires_grad_()
        loss = sigmoid_focal_loss(x, targets.to(on), reduction="none")
        (loss * weight.to(on)).sum().backward()
        total = sigmoid_focal_loss(logits.to(on), targets.to(on), reduction="sum")
        half = sigmoid_focal_loss(logits.to(on).bfloat16(), targets.to(on).bfloat16(), reduction="none")
        return loss.detach(), x.grad, total, half

    cases = ("fwd none, +-100 logits", "bwd (weighted sum)", "fwd sum", "fwd none, bf16 logits")
    for case, on_device, on_cpu, tolerance in zip(cases, *c.runs(losses), (1e-6, 1e-6, 1e-5, 1e-6)):
        c.close("sigmoid_focal_loss", f"{logits.numel()} {case}", on_device, on_cpu, tolerance)


def compare_roi_align(c: Comparison) -> None:
    """roi_align forward and backward; the CPU side runs its threaded channel chunks when it has several threads."""
    features = torch.randn(2, 64, 48, 64, generator=c.generator)
    rois = torch.cat([torch.randint(0, 2, (512, 1), generator=c.generator).float(), c.float_boxes(512, 200, 60)], dim=1)
    grad_out = torch.randn(512, 64, 7, 7, generator=c.generator)
    for sampling_ratio, aligned in ((2, True), (0, False)):
        def pool(on: str, sampling_ratio=sampling_ratio, aligned=aligned) -> tuple[torch.Tensor, torch.Tensor]:
            f = features.to(on).requires_grad_()
            out = roi_align(f, rois.to(on), (7, 7), 0.25, sampling_ratio, aligned)
            out.backward(grad_out.to(on))
            return out.detach(), f.grad

        on_device, on_cpu = c.runs(pool)
        case = f"512 RoIs x 64 ch, s={sampling_ratio} aligned={aligned}"
        c.close("roi_align", case, on_device[0], on_cpu[0], 1e-5)
        c.close("roi_align bwd", case, on_device[1], on_cpu[1], 1e-5)


def compare_anchors(c: Comparison) -> None:
    """AnchorGenerator: anchors generated on the device equal the CPU's."""
    generator = AnchorGenerator([[8, 16], [32]], [[0.5, 1.0, 2.0], [1.0]])
    for on_device, on_cpu in zip(generator([(40, 30), (10, 8)], [8, 32], device=c.device),
                                 generator([(40, 30), (10, 8)], [8, 32])):
        c.equal("AnchorGenerator", f"{len(on_cpu)} anchors", on_device, on_cpu)


def compare_kernels(device: str, seed: int, cpu_threads: int) -> int:
    """Compare each detkit.ops kernel on ``device`` with the same call on the CPU (``cpu_threads`` threads), inputs
    drawn from ``seed``; one line per case. Returns 1 if any case disagrees, else 0 (an exit status)."""
    torch.set_num_threads(cpu_threads)
    comparison = Comparison(device, seed)
    print(f"{'kernel':<22}{'case':<36}{'error':>12}{'tolerance':>12}  result")
    for compare in (compare_iou, compare_nms, compare_matcher, compare_box_coder, compare_focal_loss,
                    compare_roi_align, compare_anchors):
        compare(comparison)
    if device == "cuda":
        torch.cuda.synchronize()
    failures = comparison.failures
    print(f"{failures} of the cases above disagree" if failures else "every case agrees")
    return 1 if failures else 0
