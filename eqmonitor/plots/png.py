"""PNG-encoded figures: what the figure worker hands back, so that the training process never encodes an image.

TensorBoard and W&B both store images as PNG files. Encoding a 650 × 500 figure takes 15–25 ms of CPU, which used to
be spent in the training process at its next hook; the worker process encodes instead (fast zlib level: figures are
flat colours and compress well at any level), and the sinks write the bytes as they are
(:func:`eqmonitor.sinks.log_images`). An :class:`EncodedImage` still behaves as the RGB array it encodes where one
is asked for (``np.asarray(image)``, ``image.shape``), decoding on demand.

Torch-free: the worker process imports it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["EncodedImage", "encode_png"]

PNG_LEVEL = 1  # zlib level: 1 is ~1.5x faster than PIL's default 6, for files ~5% larger


@dataclass(frozen=True)
class EncodedImage:
    """An RGB ``uint8`` image of ``height × width`` pixels, as the bytes of a PNG file."""

    png: bytes
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """The decoded array's shape, ``(height, width, 3)``."""
        return self.height, self.width, 3

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def to_array(self) -> np.ndarray:
        """The decoded ``[H, W, 3]`` ``uint8`` array."""
        from PIL import Image

        with Image.open(io.BytesIO(self.png)) as image:
            return np.asarray(image.convert("RGB"))

    def __array__(self, dtype: Optional[Any] = None, copy: Optional[bool] = None) -> np.ndarray:
        array = self.to_array()
        return array if dtype is None else array.astype(dtype)


def encode_png(rgb: np.ndarray, level: int = PNG_LEVEL) -> EncodedImage:
    """Encode an ``[H, W, 3]`` ``uint8`` array as PNG (lossless: it decodes to the same array)."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"Expected an RGB uint8 array [H, W, 3], but got {rgb.dtype} {tuple(rgb.shape)}.")
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(out, format="PNG", compress_level=level)
    return EncodedImage(out.getvalue(), int(rgb.shape[0]), int(rgb.shape[1]))
