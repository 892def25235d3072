"""The predictor's resize and padding as tensor operations an ONNX graph can hold, for any input size.

Dims: H x W the input image, h x w the resized one, Hp x Wp the padded one (multiples of ``size_divisor``).

The predictor resizes uint8 images with OpenCV (``detkit.data.transforms.DetectionTransform``): ``INTER_AREA``
when the image shrinks, ``INTER_LINEAR`` when it grows, rounding to uint8. A graph-side bilinear ``Resize``
without antialiasing samples 4 pixels where ``INTER_AREA`` averages all of them, and gives the network a
visibly different image (docs/guide/export.md measures it). Both OpenCV filters are separable and linear: one
(h, H) and one (w, W) weight matrix per image reproduce them, ``resized = A_y @ image @ A_x^T``, with OpenCV's
weights (area overlaps) and rounding to whole uint8 levels; the bilinear filter is two taps per output pixel,
gathered, with OpenCV's integer weights and steps. Weights of outputs past h (w) are zero: the same
operations pad the image.
"""
from __future__ import annotations

import torch

AREA_SLIVER = 1e-3  # OpenCV's area filter ignores partial overlaps up to this many pixels
AREA_TIE = 5e-5  # float32 noise of an area sum of uint8 levels, far below the 1 / 255 steps of real values
LINEAR_COEF_SCALE = 2048.0  # OpenCV's INTER_RESIZE_COEF_SCALE: uint8 bilinear weights in 1/2048 steps


def resized_size(height: torch.Tensor, width: torch.Tensor, min_size: int, max_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``detkit.data.transforms.resized_size`` of (1,) int64 sizes, in float64 as Python computes it.

    Returns (h, w) (1,) int64 and the (1,) float64 scale factor (< 1: the image shrinks).
    """
    h, w = height.to(torch.float64), width.to(torch.float64)
    shorter, longer = torch.minimum(h, w), torch.maximum(h, w)
    scale = min_size / shorter
    scale = torch.where(longer * scale > max_size, max_size / longer, scale)
    # torch.round rounds half to even, as Python's round does
    return (torch.round(h * scale).clamp(min=1).to(torch.int64), torch.round(w * scale).clamp(min=1).to(torch.int64),
            scale)


def area_weights(size: torch.Tensor, new_size: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
    """(P, S) float32 weights of OpenCV's ``INTER_AREA`` from ``size`` (S) to ``new_size`` <= S pixels, for P =
    ``padded`` outputs ((1,) int64 each): output i averages input [i * s, (i + 1) * s), s = S / new_size, by
    overlap; rows past new_size are 0."""
    step = size.to(torch.float64) / new_size.to(torch.float64)
    outputs = torch.arange(padded[0], dtype=torch.float64)[:, None]  # (P, 1)
    starts = outputs * step
    pixels = torch.arange(size[0], dtype=torch.float64)[None, :]  # (1, S)
    overlap = torch.minimum(starts + step, pixels + _double(1)) - torch.maximum(starts, pixels)  # (P, S)
    keep = (overlap > _double(AREA_SLIVER)) & (outputs < new_size.to(torch.float64))
    overlap = torch.where(keep, overlap, torch.zeros_like(overlap))
    cell = torch.maximum(torch.minimum(step, size.to(torch.float64) - starts), _double(AREA_SLIVER))  # (P, 1)
    return (overlap / cell).to(torch.float32)


def area_rounding(values: torch.Tensor, height: torch.Tensor, new_height: torch.Tensor, width: torch.Tensor,
                  new_width: torch.Tensor) -> torch.Tensor:
    """Area-filtered values (any shape) -> whole uint8 levels the way OpenCV rounds them.

    OpenCV's 2x2 shrink adds 2 and shifts (halves round up); every other area shrink rounds half to even. With
    rational weights (1/3, 2/3...) many exact values are halves, which OpenCV's float32 sums hit exactly and ours
    miss by float noise: values within ``AREA_TIE`` of a half count as that half. Measured against cv2.resize on
    shrinks of 2x, 3x, 4x, 5x and 7 non-integer factors: all pixels equal but 0.01-0.02% at 1.07x and 1.5x (one
    level; OpenCV's float32 summation order).
    """
    twice = values * 2
    values = torch.where((twice - torch.round(twice)).abs() < 2 * AREA_TIE, torch.round(twice) / 2, values)
    two_by_two = (height == 2 * new_height) & (width == 2 * new_width)
    return torch.where(two_by_two, torch.floor(values + 0.5), torch.round(values))


def linear_taps(size: torch.Tensor, new_size: torch.Tensor, padded: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's uint8 ``INTER_LINEAR`` taps from ``size`` to ``new_size`` pixels, for ``padded`` outputs: half-pixel
    centres, integer weights out of 2048 (each rounded on its own, as OpenCV does).

    Returns (first (P,) int64, second (P,) int64 input pixels, their weights (P,) float32 integers); outputs past
    ``new_size`` get weight 0.
    """
    step = size.to(torch.float64) / new_size.to(torch.float64)
    outputs = torch.arange(padded[0], dtype=torch.float64)
    position = ((outputs + _double(0.5)) * step - _double(0.5)).to(torch.float32)  # OpenCV keeps it in float32
    first = torch.floor(position)
    fraction = position - first
    last = (size - 1).to(torch.float32)
    inside = (outputs < new_size.to(torch.float64)).to(torch.float32)
    first_weight = torch.round((1 - fraction) * LINEAR_COEF_SCALE) * inside
    second_weight = torch.round(fraction * LINEAR_COEF_SCALE) * inside
    # past an edge both taps read the edge pixel, keeping their weights: measured bit-exact with OpenCV 5, whose
    # integer steps round differently than with the weights moved onto one tap
    return (first.clamp(min=0).minimum(last).to(torch.int64), (first + 1).clamp(min=0).minimum(last).to(torch.int64),
            first_weight, second_weight)


def linear_resize(levels: torch.Tensor, rows: tuple, columns: tuple) -> torch.Tensor:
    """levels (3, H, W) uint8 values as float32 -> (3, Hp, Wp) by ``linear_taps`` rows and columns, with the integer
    steps of OpenCV's vectorised uint8 path (a row pass summing to 2048ths, >> 4, each vertical product >> 16,
    then + 2 >> 2): bit-exact with OpenCV on the sizes measured, where exact arithmetic is off by one level on
    ~12% of pixels."""
    left, right, left_weight, right_weight = columns
    # integers below 2^24: exact in float32
    across = levels.index_select(2, left) * left_weight + levels.index_select(2, right) * right_weight  # (3, H, Wp)
    across = torch.floor(across.to(torch.float64) / 16)  # products below need more than float32's 24 bits
    top, bottom, top_weight, bottom_weight = rows
    upper = torch.floor(across.index_select(1, top) * top_weight.to(torch.float64)[:, None] / 65536)
    lower = torch.floor(across.index_select(1, bottom) * bottom_weight.to(torch.float64)[:, None] / 65536)
    return torch.floor((upper + lower + 2) / 4).to(torch.float32)  # (3, Hp, Wp)


def _double(value: float) -> torch.Tensor:
    """A float64 constant for the weight arithmetic: the exporter's implicit typing of Python numbers defaults to
    float32, and one float32 step moves a weight by an ulp and OpenCV's rounding with it."""
    return torch.tensor(value, dtype=torch.float64)


def padded_length(length: torch.Tensor, size_divisor: int) -> torch.Tensor:
    """``length`` ((1,) int64) rounded up to a multiple of ``size_divisor``, as ``collate_detection`` pads."""
    return torch.div(length + size_divisor - 1, size_divisor, rounding_mode="floor") * size_divisor


def resize_and_pad(image: torch.Tensor, min_size: int, max_size: int, size_divisor: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The predictor's input from one image.

    Args:
        image: (3, H, W) float32 RGB in [0, 1]; quantised to uint8 levels first, as ``read_image`` does.
        min_size, max_size, size_divisor: the checkpoint's ``data.*`` resize and padding.
    Returns:
        (padded (1, 3, Hp, Wp) float32 in [0, 1], zero outside the resized image; h and w 0-dim int64;
        scale (2,) float32 (w / W, h / H), the factor ``to_original_pixels`` divides boxes by).
    """
    shape = torch._shape_as_tensor(image)  # (3,) int64: traced, it follows the input
    # (1,) rather than 0-dim: the exporter computes arithmetic between 0-dim tensors in float32, whatever their type
    height, width = shape[1:2], shape[2:3]
    new_height, new_width, scale = resized_size(height, width, min_size, max_size)
    padded_height, padded_width = padded_length(new_height, size_divisor), padded_length(new_width, size_divisor)
    levels = torch.round(image.clamp(0, 1) * 255)  # (3, H, W) in 0..255
    rows = area_weights(height, new_height, padded_height)  # (Hp, H)
    columns = area_weights(width, new_width, padded_width)  # (Wp, W)
    shrunk = area_rounding(rows @ (levels @ columns.t()), height, new_height, width, new_width)
    grown = linear_resize(levels, linear_taps(height, new_height, padded_height),
                          linear_taps(width, new_width, padded_width))
    # both computed, one kept: a Python branch would be fixed at the traced image's case
    resized = torch.where(scale < 1, shrunk, grown)
    factors = torch.cat([new_width.to(torch.float64) / width.to(torch.float64),
                         new_height.to(torch.float64) / height.to(torch.float64)]).to(torch.float32)
    return (resized.clamp(0, 255) / 255.0)[None], new_height[0], new_width[0], factors
