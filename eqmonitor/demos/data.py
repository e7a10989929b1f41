"""Data that ships with the installed packages: scikit-learn's bundled handwritten digits, as image tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["load_digits"]


def load_digits(size: int = 28, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """The 1,797 8×8 digits of ``sklearn.datasets.load_digits`` (bundled with scikit-learn, no download),
    scaled to ``[0, 1]``, resized bilinearly to ``size × size`` and centred in a zero border.

    Returns:
        ``images [1797, 1, size, size]`` and ``labels [1797]`` (int64).

    Raises:
        ModuleNotFoundError: scikit-learn is not installed (``pip install scikit-learn``).
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ModuleNotFoundError as err:  # pragma: no cover - dependency message
        raise ModuleNotFoundError(
            "`load_digits` needs scikit-learn: `pip install scikit-learn` (or `pip install eqmonitor[examples]`)."
        ) from err
    bunch = _sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64)[:, None] / 16.0
    inner = max(1, round(size * 0.75))
    images = F.interpolate(images, size=(inner, inner), mode="bilinear", align_corners=False)
    pad = size - inner
    images = F.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    return images.to(dtype), torch.as_tensor(bunch.target, dtype=torch.long)
