"""Full-reference image quality metrics (numpy / scikit-image, no torch).

Images are float arrays in [0, 1], HWC (C = 3) or HW, so the data range is 1.0.
"""

from __future__ import annotations

import numpy as np
from skimage import metrics as skimage_metrics


def check_pair(image: np.ndarray, reference: np.ndarray) -> None:
    """Raise ValueError unless both are HW or HWC (C = 3) arrays of one shape."""
    if image.shape != reference.shape:
        raise ValueError(f"shape mismatch: {image.shape} vs reference {reference.shape}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected HW or HWC with 3 channels, got {image.shape}")


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, data range 1.0 (inputs in [0, 1])."""
    check_pair(image, reference)
    return float(skimage_metrics.peak_signal_noise_ratio(reference, image, data_range=1.0))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity in [-1, 1] (scikit-image defaults, data range 1.0, channels averaged)."""
    check_pair(image, reference)
    channel_axis = -1 if image.ndim == 3 else None
    return float(
        skimage_metrics.structural_similarity(
            reference, image, data_range=1.0, channel_axis=channel_axis
        )
    )
