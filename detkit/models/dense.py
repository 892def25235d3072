"""The dense-anchor stage shared by RetinaNet's head and Faster R-CNN's RPN: anchors on every pyramid level,
batched IoU and matching against the ground truth, the matched-box gather and the box regression loss.

Its anchor sizes and aspect ratios are buffers, so a checkpoint carries them: anchors fitted to a dataset
(``anchors.sizes: auto``, see ``detkit.models.anchor_fit``) are the ones evaluation and prediction use.

Dims: B images, L pyramid levels, S anchor sizes per level, R aspect ratios, A = S * R anchors per location,
N_l anchors of level l, N anchors over all levels, M ground truths of one image, P positive anchors of the batch.
"""
from __future__ import annotations

import torch
from torch import nn

from detkit.models.box_loss import box_regression_loss
from detkit.models.settings import Anchors, Matching
from detkit.ops import AnchorGenerator, BoxCoder, Matcher, box_iou


def flatten_level(output: torch.Tensor, values_per_anchor: int) -> torch.Tensor:
    """(B, A * V, H, W) -> (B, H * W * A, V), location-major like ``AnchorGenerator``'s anchors."""
    batch, _, height, width = output.shape
    output = output.view(batch, -1, values_per_anchor, height, width)  # (B, A, V, H, W)
    return output.permute(0, 3, 4, 1, 2).reshape(batch, -1, values_per_anchor)  # (B, H*W*A, V)


class DenseAnchorStage(nn.Module):
    """Anchors -> IoU -> matching -> matched ground truth -> box loss, for every dense detector of detkit.

    Args:
        strides: stride of each pyramid level, finest first.
        anchors: the ``Anchors`` group; "auto" sizes or ratios are placeholders to be fitted to the training boxes
            before training (``detkit.engine.anchor_check.AnchorCheck``); ``fitted`` records that it happened.
        matching: the ``Matching`` group (``detkit.ops.Matcher``).
        box_loss: "l1", "smooth_l1" or "giou" (``detkit.models.box_loss``).

    The anchors keep one form from config to generator: ``base_sizes`` (L,) and ``scales`` (S,), buffers so a
    checkpoint carries them; level l's sizes are ``base_sizes[l] * scales``.
    """

    def __init__(self, *, strides: list[int], anchors: Anchors, matching: Matching, box_loss: str):
        super().__init__()
        self.strides = list(strides)
        self.register_buffer("base_sizes", torch.tensor(anchors.base_sizes(self.strides), dtype=torch.float32))  # (L,)
        self.register_buffer("scales", torch.tensor(anchors.scales, dtype=torch.float32))  # (S,)
        self.register_buffer("aspect_ratios", torch.tensor(anchors.ratios(), dtype=torch.float32))  # (R,)
        self.register_buffer("fitted", torch.tensor(False))
        self.fit_sizes, self.fit_ratios = anchors.fit_sizes, anchors.fit_ratios
        self.whole_pixel_sizes, self.stride_rule = anchors.whole_pixel_sizes, anchors.stride_rule
        self.matcher = Matcher(matching.fg_iou_threshold, matching.bg_iou_threshold, matching.allow_low_quality_matches)
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.box_loss = box_loss
        self._build_generator()
        # a checkpoint's anchors replace the configured ones when it is loaded
        self.register_load_state_dict_post_hook(lambda module, _: module._build_generator())

    @property
    def anchor_sizes(self) -> torch.Tensor:
        """(L, S) anchor sizes in pixels per level: ``base_sizes[l] * scales[s]`` (rounded down with
        ``whole_pixel_sizes``)."""
        sizes = self.base_sizes[:, None] * self.scales[None, :]
        return sizes.floor() if self.whole_pixel_sizes else sizes

    @property
    def num_anchors_per_location(self) -> int:
        """A = S * R, the same on every level."""
        return len(self.scales) * len(self.aspect_ratios)

    @property
    def needs_fit(self) -> bool:
        """Whether the anchors are placeholders still to be fitted to the training boxes."""
        return (self.fit_sizes or self.fit_ratios) and not bool(self.fitted)

    def _build_generator(self) -> None:
        sizes = tuple(tuple(level) for level in self.anchor_sizes.tolist())
        self.anchor_generator = AnchorGenerator(sizes, (tuple(self.aspect_ratios.tolist()),) * len(sizes))

    def set_anchors(self, base_sizes: tuple[float, ...], aspect_ratios: tuple[float, ...]) -> None:
        """Replace the (L,) base sizes and (R,) ratios (same counts: the head's outputs depend on A) and mark them
        fitted; the scales stay as configured."""
        sizes = torch.tensor(base_sizes, dtype=torch.float32)
        ratios = torch.tensor(aspect_ratios, dtype=torch.float32)
        if sizes.shape != self.base_sizes.shape or ratios.shape != self.aspect_ratios.shape:
            raise ValueError(f"set_anchors keeps {len(self.base_sizes)} base sizes (one per level) and "
                             f"{len(self.aspect_ratios)} ratios, got {tuple(base_sizes)} and {tuple(aspect_ratios)}")
        self.base_sizes.copy_(sizes)
        self.aspect_ratios.copy_(ratios)
        self.fitted.fill_(True)
        self._build_generator()

    def anchors(self, features: list[torch.Tensor], padded_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        """features: per level (B, C, H_l, W_l) of images padded to ``padded_size`` (h, w) -> per level anchors
        (N_l, 4) xyxy pixels on the features' device (cached there by the generator: no per-step host copy).
        ``padded_size`` is needed with ``stride_rule`` "padded_image" only."""
        shapes = [tuple(f.shape[-2:]) for f in features]
        return self.anchor_generator(shapes, self.cell_strides(shapes, padded_size), features[0].device)

    def image_anchors(self, padded_size: tuple[int, int]) -> torch.Tensor:
        """All anchors (N, 4) of one padded image of (h, w) pixels, without running the network: each level's
        map is ceil(h / stride) x ceil(w / stride), as the backbone's stride-2 convolutions and FPN make it."""
        shapes = self.level_shapes(padded_size)
        return torch.cat(self.anchor_generator(shapes, self.cell_strides(shapes, padded_size), self.base_sizes.device))

    def level_shapes(self, padded_size: tuple[int, int]) -> list[tuple[int, int]]:
        """Per level the map (H_l, W_l) of a padded image of (h, w) pixels: ceil(h / stride) x ceil(w / stride)."""
        height, width = padded_size
        return [(-(-height // stride), -(-width // stride)) for stride in self.strides]

    def cell_strides(self, shapes: list[tuple[int, int]], padded_size: tuple[int, int]) -> list:
        """Per level the pixels between anchor centres: the level's stride, or (h // H_l, w // W_l) with
        ``stride_rule`` "padded_image" (torchvision's rule)."""
        if self.stride_rule == "level":
            return self.strides
        if padded_size is None:
            raise ValueError("anchors with stride_rule 'padded_image' need the padded image size")
        height, width = (int(v) for v in padded_size)
        return [(height // map_h, width // map_w) for map_h, map_w in shapes]

    def match(self, anchors: torch.Tensor, targets: list[dict]) -> torch.Tensor:
        """anchors (N, 4), targets with ``boxes`` (M, 4) -> (B, N) int64 gt index per anchor, Matcher encoding.

        One IoU call for the batch's stacked ground truths, then the Matcher per image.
        """
        gt_boxes = torch.cat([t["boxes"] for t in targets])  # (sum M, 4)
        iou = box_iou(gt_boxes, anchors)  # (sum M, N)
        per_image = iou.split([len(t["boxes"]) for t in targets])  # B x (M, N)
        return torch.stack([self.matcher(image_iou) for image_iou in per_image])  # (B, N)

    @staticmethod
    def matched_targets(matched: torch.Tensor, positive: torch.Tensor, targets: list[dict]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """matched (B, N), positive (B, N) bool -> (boxes (P, 4), labels (P,)) of the gt each positive anchor
        is matched to, in the order of ``positive``'s True entries."""
        counts = torch.tensor([len(t["boxes"]) for t in targets])  # (B,)
        offsets = (counts.cumsum(0) - counts).to(matched.device)  # (B,) first row of each image's gts
        flat_index = (matched.clamp(min=0) + offsets[:, None])[positive]  # (P,) into the stacked gts
        gt_boxes = torch.cat([t["boxes"] for t in targets])  # (sum M, 4)
        gt_labels = torch.cat([t["labels"] for t in targets])  # (sum M,)
        return gt_boxes[flat_index], gt_labels[flat_index]

    def box_loss_sum(self, deltas: torch.Tensor, anchors: torch.Tensor, positive: torch.Tensor,
                     gt_boxes: torch.Tensor) -> torch.Tensor:
        """deltas (B, N, 4), anchors (N, 4), positive (B, N) bool, gt_boxes (P, 4) -> summed box loss (scalar)."""
        anchors_per_positive = anchors.expand(len(positive), -1, -1)[positive]  # (P, 4)
        return box_regression_loss(self.box_loss, deltas[positive], gt_boxes, anchors_per_positive, self.box_coder)

