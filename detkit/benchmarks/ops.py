"""Benchmark detkit.ops against torchvision: median time of alternating runs in one process.

One row per (op, size, device): detkit ms, torchvision ms, ratio detkit / torchvision (< 1 is faster) and whether
the two results agree. ``tools/bench_ops.py`` is the command line.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torchvision
from torchvision.models.detection import _utils as tv_utils  # torchvision's Matcher and BoxCoder are public only here

from detkit.benchmarks.timing import timed
from detkit.ops import BoxCoder, Matcher, batched_nms, box_iou, generalized_box_iou, nms, roi_align, sigmoid_focal_loss

HEADER = f"{'op':<24} {'size':<22} {'device':<6} {'detkit ms':>10} {'tv ms':>10} {'ratio':>6}  agree"


@dataclass
class Case:
    """One row: detkit's call, torchvision's call on the same inputs, and whether their results agree."""

    op: str
    size: str
    ours: Callable[[], object]
    theirs: Callable[[], object]
    agree: Callable[[object, object], bool]


def random_boxes(n: int, generator: torch.Generator, device: str, extent: float = 1000.0) -> torch.Tensor:
    """(n, 4) float32 xyxy boxes in absolute pixels, corners in [0, extent), 1 to 201 pixels per side."""
    top_left = torch.rand(n, 2, generator=generator) * extent
    return torch.cat([top_left, top_left + 1 + torch.rand(n, 2, generator=generator) * 200], dim=1).to(device)


def jittered_iou(num_gt: int, num_anchors: int, generator: torch.Generator, device: str,
                 jitter: float = 0.15) -> torch.Tensor:
    """(num_gt, num_anchors) IoU of random gt boxes with anchors that are each one gt's box, its corners
    moved by jitter x its size (normal)."""
    gt_boxes = random_boxes(num_gt, generator, "cpu")
    owner = torch.randint(0, num_gt, (num_anchors,), generator=generator)
    sides = (gt_boxes[:, 2:] - gt_boxes[:, :2]).repeat(1, 2)[owner]  # (num_anchors, 4)
    corners = gt_boxes[owner] + torch.randn(num_anchors, 4, generator=generator) * sides * jitter
    anchors = torch.cat([torch.minimum(corners[:, :2], corners[:, 2:]),
                         torch.maximum(corners[:, :2], corners[:, 2:])], dim=1)
    return box_iou(gt_boxes.to(device), anchors.to(device))


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and values (choices: NMS indices, matches)."""
    return torch.equal(a, b)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to 1e-5 (float results)."""
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def focal_backward(loss_fn, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, gradient of the logits (same shape as ``logits``)) of ``loss_fn``."""
    logits = logits.detach().requires_grad_()
    loss = loss_fn(logits, targets, reduction="sum")
    loss.backward()
    return loss.detach(), logits.grad


def pool_backward(pool_fn, features: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RoIAlign 7 x 7 at stride 4, sampling ratio 2, then the backward pass of the sum."""
    features = features.detach().requires_grad_()
    pooled = pool_fn(features, rois, (7, 7), 0.25, 2)
    pooled.backward(torch.ones_like(pooled))
    return pooled.detach(), features.grad


def cases(device: str) -> Iterator[Case]:
    """The benchmark rows, each one's inputs made just before it is measured (a generator): allocating
    hundreds of MB for later rows first would slow the first rows down while the OS settles its pages."""
    generator = torch.Generator().manual_seed(0)
    for n in (1_000, 10_000):
        boxes, scores = random_boxes(n, generator, device), torch.rand(n, generator=generator).to(device)
        yield Case("nms", f"N={n // 1000}k", lambda b=boxes, s=scores: nms(b, s, 0.5),
                   lambda b=boxes, s=scores: torchvision.ops.nms(b, s, 0.5), same)
    boxes, scores = random_boxes(10_000, generator, device), torch.rand(10_000, generator=generator).to(device)
    labels = torch.randint(0, 80, (10_000,), generator=generator).to(device)
    yield Case("batched_nms", "10k boxes, 80 classes", lambda: batched_nms(boxes, scores, labels, 0.5),
               lambda: torchvision.ops.batched_nms(boxes, scores, labels, 0.5), same)

    boxes1, boxes2 = random_boxes(1000, generator, device), random_boxes(20_000, generator, device)
    yield Case("box_iou", "1000 x 20000", lambda: box_iou(boxes1, boxes2),
               lambda: torchvision.ops.box_iou(boxes1, boxes2), close)
    yield Case("generalized_box_iou", "1000 x 5000", lambda: generalized_box_iou(boxes1, boxes2[:5000]),
               lambda: torchvision.ops.generalized_box_iou(boxes1, boxes2[:5000]), close)

    logits = (torch.randn(8, 20_000, 80, generator=generator) * 4).to(device)
    targets = (torch.rand(8, 20_000, 80, generator=generator) < 0.01).float().to(device)
    size = "(8, 20000, 80)"
    yield Case("focal fwd, none", size, lambda: sigmoid_focal_loss(logits, targets),
               lambda: torchvision.ops.sigmoid_focal_loss(logits, targets), close)
    yield Case("focal fwd, sum", size, lambda: sigmoid_focal_loss(logits, targets, reduction="sum"),
               lambda: torchvision.ops.sigmoid_focal_loss(logits, targets, reduction="sum"),
               lambda a, b: torch.allclose(a, b, rtol=1e-5))
    yield Case("focal fwd+bwd, sum", size, lambda: focal_backward(sigmoid_focal_loss, logits, targets),
               lambda: focal_backward(torchvision.ops.sigmoid_focal_loss, logits, targets),
               lambda a, b: torch.allclose(a[0], b[0], rtol=1e-5) and close(a[1], b[1]))

    # RoIAlign of a CPU Faster R-CNN step: 16 images x 64 RoIs pooled from a 64-channel P2 map
    features = torch.randn(16, 64, 32, 32, generator=generator).to(device)
    rois = torch.cat([torch.randint(0, 16, (1024, 1), generator=generator).float(),
                      random_boxes(1024, generator, "cpu", extent=100.0) * 0.3], dim=1).to(device)  # (1024, 5)
    yield Case("roi_align fwd+bwd", "1024 RoIs, 64 channels", lambda: pool_backward(roi_align, features, rois),
               lambda: pool_backward(torchvision.ops.roi_align, features, rois),
               lambda a, b: same(a[0], b[0]) and same(a[1], b[1]))

    gt_boxes, anchors = random_boxes(100, generator, device), random_boxes(100_000, generator, device)
    iou = box_iou(gt_boxes, anchors)  # (100, 100k)
    for allow in (False, True):
        yield Case(f"Matcher{', low-quality' if allow else ''}", "100 x 100k",
                   lambda a=allow: Matcher(0.5, 0.4, a)(iou), lambda a=allow: tv_utils.Matcher(0.5, 0.4, a)(iou), same)
    # big subjects, few anchors: each anchor is one gt's box with jittered corners, ~90% of them matched
    # (the random boxes above match ~5%); low-quality on, as RetinaNet and the RPN use it. Its own
    # generator leaves the later rows' inputs as they were.
    dense_iou = jittered_iou(100, 100_000, torch.Generator().manual_seed(1), device)
    yield Case("Matcher, dense", "100 x 100k", lambda: Matcher(0.5, 0.4, True)(dense_iou),
               lambda: tv_utils.Matcher(0.5, 0.4, True)(dense_iou), same)

    gt_boxes, anchors = random_boxes(100_000, generator, device), random_boxes(100_000, generator, device)
    deltas = torch.randn(100_000, 4, generator=generator).to(device)
    ours, theirs = BoxCoder((10.0, 10.0, 5.0, 5.0)), tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    yield Case("BoxCoder.encode", "100k", lambda: ours.encode(gt_boxes, anchors),
               lambda: theirs.encode_single(gt_boxes, anchors), close)
    yield Case("BoxCoder.decode", "100k", lambda: ours.decode(deltas, anchors),
               lambda: theirs.decode_single(deltas, anchors), close)


def measure(case: Case, device: str, budget_s: float, min_pairs: int = 5, max_pairs: int = 51
            ) -> tuple[float, float, bool]:
    """Median ms of ours and theirs over alternating runs (after one warm-up each), and whether they agree."""
    _, ours = timed(case.ours, device)
    _, theirs = timed(case.theirs, device)
    agree = case.agree(ours, theirs)
    our_times, their_times = [], []
    started = time.perf_counter()
    while len(our_times) < max_pairs and (len(our_times) < min_pairs or time.perf_counter() - started < budget_s):
        our_times.append(timed(case.ours, device)[0] * 1e3)
        their_times.append(timed(case.theirs, device)[0] * 1e3)
    return statistics.median(our_times), statistics.median(their_times), agree


def run_ops_benchmark(*, budget_s: float = 2.0, cuda: bool = True, print_line: Callable[[str], None] = print) -> None:
    """Print the table through ``print_line``: CPU rows, then CUDA rows where a GPU is present and ``cuda``.
    ``budget_s``: seconds of timing per row after 5 pairs. Torch's CPU thread count is the caller's."""
    devices = ["cpu"] + (["cuda"] if cuda and torch.cuda.is_available() else [])
    gpu = f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""
    print_line(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
               f"{torch.get_num_threads()} CPU threads{gpu}")
    print_line(HEADER)
    print_line("-" * len(HEADER))
    for device in devices:
        for case in cases(device):
            ours_ms, theirs_ms, agree = measure(case, device, budget_s)
            print_line(f"{case.op:<24} {case.size:<22} {device:<6} {ours_ms:>10.2f} {theirs_ms:>10.2f} "
                       f"{ours_ms / theirs_ms:>6.2f}  {'yes' if agree else 'NO'}")
