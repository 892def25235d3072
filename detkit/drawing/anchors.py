"""One image's anchors as a dense stage's matcher sees them (``tools/show_anchors.py``): the positive and the ignored
anchors, a sample of the background ones, and the ground truth on top, with the counts and a legend above.

Dims: N anchors of the image, M ground truths; boxes (n, 4) float32 xyxy input pixels (after the resize).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import draw_bounding_boxes

from detkit.drawing.boxes import draw_boxes
from detkit.ops import BACKGROUND, IGNORED

if TYPE_CHECKING:
    from detkit.models.dense import DenseAnchorStage

# anchors in colours no class has (``detkit.drawing.boxes.class_colour``: the ground truth keeps its class colour)
POSITIVE, IGNORED_COLOUR, BACKGROUND_COLOUR = (255, 255, 255), (0, 255, 255), (0, 0, 0)
SWATCH = (90, 70, 190)  # legend squares: the outline colour on a dark fill, as the anchors show on an image
LINE_WIDTHS = {"positive": 2, "ignored": 1, "background": 1}
FONT_SIZE = 13


@dataclass
class AnchorView:
    """One image's anchors, split as ``stage``'s matcher assigns them to the ground truth.

    ``positive`` (P, 4), ``ignored`` (I, 4), ``background`` (B, 4): every anchor in one of them (N = P + I + B);
    ``background_sample`` (S, 4): the background anchors drawn, S = min(B, the number asked for).
    """

    name: str
    stage: DenseAnchorStage
    positive: torch.Tensor
    ignored: torch.Tensor
    background: torch.Tensor
    background_sample: torch.Tensor
    sampler: object | None = None  # the stage's anchor sampler (Faster R-CNN's RPN), for the title

    @property
    def title(self) -> list[str]:
        """Two lines: the stage and its matcher, then the counts."""
        matcher = self.stage.matcher
        lines = [f"{self.name}: positive IoU >= {matcher.high_threshold:g}, background < {matcher.low_threshold:g}, "
                 f"low-quality matches {'on' if matcher.allow_low_quality_matches else 'off'}",
                 f"{len(self.positive)} positive, {len(self.ignored)} ignored, {len(self.background)} background "
                 f"({len(self.background_sample)} drawn) of "
                 f"{len(self.positive) + len(self.ignored) + len(self.background)} anchors"]
        if self.sampler is not None:
            lines[1] += (f"; the loss samples {self.sampler.batch_size_per_image}, at most "
                         f"{self.sampler.positive_fraction:.0%} positive")
        return lines


def anchor_view(name: str, stage: DenseAnchorStage, padded_size: tuple[int, int], gt_boxes: torch.Tensor,
                num_background: int, seed: int = 0, sampler=None) -> AnchorView:
    """Match the anchors of an image padded to (h, w) ``padded_size`` to ``gt_boxes`` (M, 4) with the stage's own
    ``image_anchors`` and ``match``; ``num_background`` background anchors drawn at random (``seed``)."""
    anchors = stage.image_anchors(padded_size)  # (N, 4)
    matched = stage.match(anchors, [{"boxes": gt_boxes.to(anchors)}])[0]  # (N,)
    background = anchors[matched == BACKGROUND]
    order = torch.randperm(len(background), generator=torch.Generator().manual_seed(seed))
    return AnchorView(name=name, stage=stage, positive=anchors[matched >= 0], ignored=anchors[matched == IGNORED],
                      background=background, background_sample=background[order[:num_background]], sampler=sampler)


def draw_anchor_view(image: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, class_names: list[str],
                     view: AnchorView, upscale: int = 4) -> Image.Image:
    """image (3, H, W) float in [0, 1]; gt_boxes (M, 4), gt_labels (M,) -> an RGB picture ``upscale`` times larger:
    background sample (black), ignored (cyan) and positive (white) anchors, the ground truth in its class colours
    with its names on top, and above the image ``view.title`` and a legend."""
    canvas = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    canvas = canvas.repeat_interleave(upscale, dim=1).repeat_interleave(upscale, dim=2)
    for kind, boxes, colour in (("background", view.background_sample, BACKGROUND_COLOUR),
                                ("ignored", view.ignored, IGNORED_COLOUR), ("positive", view.positive, POSITIVE)):
        if len(boxes):  # torchvision warns on an empty box list
            canvas = draw_bounding_boxes(canvas, boxes * upscale, colors=[colour] * len(boxes), width=LINE_WIDTHS[kind])
    captions = [class_names[int(label)] for label in gt_labels]
    drawn = draw_boxes(canvas.float() / 255, gt_boxes.float() * upscale, gt_labels, captions)
    return _with_header(drawn, view.title)


def _with_header(picture: Image.Image, title: list[str]) -> Image.Image:
    """``picture`` below a white strip holding the title (wrapped to the picture's width) and the colour legend."""
    font = ImageFont.load_default(size=FONT_SIZE)
    measure = ImageDraw.Draw(picture).textlength
    lines = [wrapped for text in title for wrapped in _wrap(text, picture.width - 8, lambda t: measure(t, font=font))]
    legend = _legend_layout(picture.width - 8, lambda t: measure(t, font=font))
    height = FONT_SIZE + 5
    header = (len(lines) + 1 + max(row for row, _, _, _ in legend)) * height + 6
    framed = Image.new("RGB", (picture.width, picture.height + header), "white")
    framed.paste(picture, (0, header))
    draw = ImageDraw.Draw(framed)
    for row, text in enumerate(lines):
        draw.text((4, 3 + row * height), text, fill="black", font=font)
    for row, x, name, colour in legend:
        y = 3 + (len(lines) + row) * height
        if colour is not None:
            draw.rectangle((x, y + 2, x + FONT_SIZE, y + FONT_SIZE), fill=SWATCH, outline=colour, width=3)
            x += FONT_SIZE + 4
        draw.text((x, y), name, fill="black", font=font)
    return framed


def _wrap(text: str, width: float, length) -> list[str]:
    """Words of ``text`` in lines no wider than ``width`` as ``length`` (text -> pixels) measures them."""
    lines = [""]
    for word in text.split(" "):
        candidate = f"{lines[-1]} {word}".strip()
        if lines[-1] and length(candidate) > width:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines


def _legend_layout(width: float, length) -> list[tuple[int, int, str, tuple | None]]:
    """(row, x, name, colour or None) of each legend entry, flowing onto a new row where one would overflow."""
    entries = (("positive", POSITIVE), ("ignored", IGNORED_COLOUR), ("background (sample)", BACKGROUND_COLOUR),
               ("ground truth: class colour, named", None))
    layout, row, x = [], 0, 4
    for name, colour in entries:
        entry_width = (FONT_SIZE + 4 if colour is not None else 0) + int(length(name))
        if x > 4 and x + entry_width > width:
            row, x = row + 1, 4
        layout.append((row, x, name, colour))
        x += entry_width + 14
    return layout
