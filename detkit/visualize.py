"""Draw detections on images for a quick look (PNG grids); PIL only."""
from __future__ import annotations

import colorsys

import torch
from PIL import Image, ImageDraw


def _class_colour(label: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.9, 1.0)  # golden-ratio hues stay distinct
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                    class_names: list[str], score_threshold: float = 0.3, upscale: int = 1) -> Image.Image:
    """image (3, H, W) float in [0, 1]; boxes (D, 4) xyxy pixels of that image; scores (D,); labels (D,).

    Returns an RGB PIL image ``upscale`` times larger with a box and "name score" per detection above the threshold.
    """
    array = (image.clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
    canvas = Image.fromarray(array).resize((array.shape[1] * upscale, array.shape[0] * upscale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
        if score < score_threshold:
            continue
        colour = _class_colour(int(label))
        x1, y1, x2, y2 = (v * upscale for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        draw.text((x1 + 2, max(y1 - 11, 0)), f"{class_names[int(label)]} {score:.2f}", fill=colour)
    return canvas


def image_grid(images: list[Image.Image], columns: int = 4) -> Image.Image:
    """Tile equally sized PIL images row by row into one image."""
    width, height = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * width, rows * height), "white")
    for i, tile in enumerate(images):
        grid.paste(tile, ((i % columns) * width, (i // columns) * height))
    return grid


@torch.no_grad()
def save_prediction_grid(detector: torch.nn.Module, dataset, path: str, class_names: list[str],
                         num_images: int = 8, score_threshold: float = 0.3, upscale: int = 2) -> None:
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
