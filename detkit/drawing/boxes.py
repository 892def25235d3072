"""Boxes drawn on images: one image's predictions (``annotate``), and PNG grids of detections or of the ground truth
as training sees it. Every detkit picture takes its class colours from ``class_colour``."""
from __future__ import annotations

import colorsys
import os
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import draw_bounding_boxes

if TYPE_CHECKING:
    from detkit.inference.predictor import Prediction

TILE_SIDE = 256  # small images are enlarged to about this many pixels, so that the class names stay readable
# the training-time pictures (prediction grids, evaluation pictures) draw detections scoring >= this, so that a
# model whose own score_threshold keeps low scores for AP still gives a readable picture; predict draws all it writes
DISPLAY_SCORE_THRESHOLD = 0.3


def class_colour(label: int) -> tuple[int, int, int]:
    """The (r, g, b) 0..255 colour that every detkit picture draws training label ``label`` in."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.9, 1.0)  # golden-ratio hues stay distinct
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, captions: list[str],
               upscale: int = 1) -> Image.Image:
    """image (3, H, W) float in [0, 1]; boxes (D, 4) xyxy pixels of that image; labels (D,) int64; D captions.

    Returns an RGB PIL image ``upscale`` times larger (nearest neighbour: pixels stay sharp) with each box
    outlined in its class's colour and its caption written inside its top-left corner.
    """
    enlarged = image.clamp(0, 1).repeat_interleave(upscale, dim=1).repeat_interleave(upscale, dim=2)
    if len(boxes):  # torchvision warns on an empty box list
        colours = [class_colour(int(label)) for label in labels]
        enlarged = draw_bounding_boxes(enlarged, boxes * upscale, labels=captions, colors=colours, width=2,
                                       fill_labels=True)
    return to_pil_image(enlarged)


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                    class_names: list[str], score_threshold: float = DISPLAY_SCORE_THRESHOLD,
                    upscale: int = 1) -> Image.Image:
    """image (3, H, W) float in [0, 1]; boxes (D, 4) xyxy pixels of that image; scores (D,); labels (D,).

    Returns an RGB PIL image ``upscale`` times larger with a box and "name score" per detection above the threshold.
    """
    keep = scores >= score_threshold
    captions = [f"{class_names[int(label)]} {score:.2f}" for label, score in zip(labels[keep], scores[keep].tolist())]
    return draw_boxes(image, boxes[keep], labels[keep], captions, upscale)


def image_grid(images: list[Image.Image], columns: int = 4) -> Image.Image:
    """Tile PIL images row by row, at most ``columns`` a row, each in a cell of the largest one's size."""
    width, height = max(tile.width for tile in images), max(tile.height for tile in images)
    columns = min(columns, len(images))
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * width, rows * height), "white")
    for i, tile in enumerate(images):
        grid.paste(tile, ((i % columns) * width, (i // columns) * height))
    return grid


def caption_corner(tile: Image.Image, text: str) -> Image.Image:
    """Write ``text`` black on white in the bottom-left corner of ``tile`` (in place); returns the tile."""
    draw = ImageDraw.Draw(tile)
    left, top, right, bottom = draw.textbbox((2, tile.height - 2), text, anchor="lb")
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill="white")
    draw.text((2, tile.height - 2), text, fill="black", anchor="lb")
    return tile


def save_sample_grid(dataset, indices: list[int], path: str, class_names: list[str],
                     upscale: int | None = None) -> Image.Image:
    """Draw the items ``indices`` of a detkit dataset with their target boxes and class names, as the model
    gets them (after the dataset's transforms), and write the PNG grid to ``path``.

    Each tile is captioned with the COCO image id. ``upscale`` None enlarges images by the whole factor that
    brings their longer side closest to ``TILE_SIDE`` px without shrinking them. Returns the grid.
    """
    tiles = []
    for index in indices:
        image, target = dataset[index]
        factor = upscale or max(1, round(TILE_SIDE / max(image.shape[-2:])))
        captions = [class_names[int(label)] for label in target["labels"]]
        tile = draw_boxes(image, target["boxes"], target["labels"], captions, factor)
        tiles.append(caption_corner(tile, f"image id {target['image_id']}"))
    grid = image_grid(tiles)
    grid.save(path)
    return grid


@torch.no_grad()
def save_prediction_grid(detector: torch.nn.Module, dataset, path: str, class_names: list[str],
                         num_images: int = 8, score_threshold: float = DISPLAY_SCORE_THRESHOLD,
                         upscale: int = 2) -> None:
    """Run ``detector`` on the first ``num_images`` items of ``dataset`` and write a PNG grid to ``path``."""
    was_training = detector.training
    detector.eval()
    device = next(detector.parameters()).device
    tiles = []
    for index in range(min(num_images, len(dataset))):
        image, _ = dataset[index]
        detection = detector(image[None].to(device), [tuple(image.shape[-2:])])[0]
        tiles.append(draw_detections(image, detection["boxes"], detection["scores"], detection["labels"],
                                     class_names, score_threshold, upscale))
    image_grid(tiles).save(path)
    detector.train(was_training)


# a TrueType font scales with the image (PIL's built-in bitmap font is 11 px high on any photo); matplotlib ships it
FONT = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")


def annotate(image: np.ndarray, prediction: Prediction) -> np.ndarray:
    """image (H, W, 3) uint8 RGB and its ``Prediction`` (boxes xyxy in its pixels) -> a copy (H, W, 3) uint8 with
    a box per detection in its class's colour (``class_colour``) and "name score" in its top left
    corner, black on that colour."""
    if len(prediction.boxes) == 0:
        return image.copy()
    longer_side = max(image.shape[:2])
    captions = [f"{name} {score:.2f}" for name, score in zip(prediction.names, prediction.scores.tolist())]
    drawn = draw_bounding_boxes(
        # np.array makes a copy: PIL arrays are read-only
        torch.from_numpy(np.array(image)).permute(2, 0, 1), prediction.boxes, labels=captions,
        colors=[class_colour(label) for label in prediction.labels.tolist()],
        width=max(1, round(longer_side / 250)), font=FONT, font_size=max(9, round(longer_side / 45)),
        fill_labels=True)  # black text on the class colour: readable on any photo
    return np.ascontiguousarray(drawn.permute(1, 2, 0).numpy())
