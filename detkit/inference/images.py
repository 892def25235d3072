"""Images for prediction: one input of any supported kind -> (H, W, 3) uint8 RGB, and files/folders/globs -> paths.

Every kind comes out as the same array an image file decodes to (``detkit.data.coco.load_rgb_image``), so
the validation preprocessing applies unchanged and every kind gives the same detections.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Collection, Sequence
from typing import Union

import numpy as np
import torch
from PIL import Image

from detkit.data.coco import BadImageError, load_rgb_image, rgb_array

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
GLOB_CHARACTERS = "*?["


def read_image(image: ImageInput) -> np.ndarray:
    """One image as (H, W, 3) uint8 RGB.

    Accepts a file path (EXIF orientation applied), a PIL image (likewise), a numpy (H, W, 3) or (H, W) uint8
    array, or a (3, H, W) tensor: uint8, or float in [0, 1] (quantised to uint8 as an image file would be).
    Raises BadImageError naming the file for a missing or undecodable file; ValueError/TypeError naming the
    shape, dtype or type otherwise.
    """
    if isinstance(image, (str, os.PathLike)):
        return _read_file(os.fspath(image))
    if isinstance(image, Image.Image):
        return rgb_array(image)
    if isinstance(image, torch.Tensor):
        return _tensor_to_array(image)
    if isinstance(image, np.ndarray):
        return _checked_array(image)
    raise TypeError(f"an image must be a file path, a PIL image, a numpy (H, W, 3) uint8 array or a (3, H, W) "
                    f"tensor, got {type(image).__name__}")


def _read_file(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise BadImageError(f"image file not found: {path}")
    try:
        return load_rgb_image(path)
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
        raise BadImageError(f"cannot read image {path}: {error}") from error


def _checked_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ValueError(f"a numpy image must be uint8 (H, W, 3) RGB, got dtype {array.dtype}; for floats in [0, 1] "
                         f"pass (array * 255).round().astype(np.uint8)")
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)  # greyscale, as PIL converts it
    if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(f"a numpy image must be (H, W, 3) RGB (channels last), got shape {array.shape}")
    return np.ascontiguousarray(array)


def _tensor_to_array(tensor: torch.Tensor) -> np.ndarray:
    if tensor.ndim != 3 or tensor.shape[0] != 3 or 0 in tensor.shape:
        raise ValueError(f"a tensor image must be (3, H, W) RGB (channels first), got shape {tuple(tensor.shape)}")
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        if tensor.min() < 0 or tensor.max() > 1:
            raise ValueError(f"a float tensor image must lie in [0, 1], got values in "
                             f"[{float(tensor.min()):g}, {float(tensor.max()):g}]")
        tensor = (tensor * 255).round().to(torch.uint8)
    elif tensor.dtype != torch.uint8:
        raise ValueError(f"a tensor image must be uint8 or float in [0, 1], got dtype {tensor.dtype}")
    return np.ascontiguousarray(tensor.permute(1, 2, 0).numpy())


def expand_image_paths(items: Sequence[str]) -> list[str]:
    """Files, folders and glob patterns -> image paths (``expand_paths`` with the image extensions PIL knows)."""
    return expand_paths(items, set(Image.registered_extensions()), "image")


def expand_paths(items: Sequence[str], extensions: Collection[str], kind: str) -> list[str]:
    """Files, folders and glob patterns -> file paths, in the order given, each path once.

    A folder gives its files with one of ``extensions`` (lower case, with the dot; sorted, not recursive); a
    pattern (``*``, ``?``, ``[``; ``**`` recurses) its sorted matches; any other name is kept as given, so a
    missing file is reported when it is read. ValueError naming the folder or pattern when it matches no file
    (``kind``: "image", "video", for the message).
    """
    paths: list[str] = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, name) for name in os.listdir(item)
                           if os.path.splitext(name)[1].lower() in extensions
                           and os.path.isfile(os.path.join(item, name)))
        elif any(character in item for character in GLOB_CHARACTERS):
            found = sorted(path for path in glob.glob(item, recursive=True) if os.path.isfile(path))
        else:
            found = [item]
        if not found:
            raise ValueError(f"no {kind} files in {item!r}" if os.path.isdir(item) else f"no file matches {item!r}")
        paths.extend(found)
    return list(dict.fromkeys(paths))
