"""Decoding encoded images to ``(H, W, 3)`` uint8 RGB, converting every common mode."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DecodeError", "IMAGE_EXTENSIONS", "decode_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


class DecodeError(Exception):
    """An image that cannot be decoded; recorded per image, never fatal for a dataset."""


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes to an ``(H, W, 3)`` uint8 RGB array.

    Grayscale, palette, alpha (dropped), CMYK and YCbCr images are converted with PIL; 16-bit and 32-bit
    integer images are scaled to 8 bit (65535 -> 255); float images in [0, 1] are scaled by 255.
    Only the first frame of animated files is used.

    Args:
        data: The encoded file content.

    Returns:
        The RGB array.

    Raises:
        DecodeError: Corrupt, truncated or unsupported content.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                arr = np.asarray(img, dtype=np.float64)
                if mode == "I" and arr.max(initial=0) <= 255:
                    scaled = arr
                else:
                    scaled = arr / 257.0
                gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
                out = np.repeat(gray[..., None], 3, axis=2)
            elif mode == "F":
                arr = np.asarray(img, dtype=np.float64)
                top = arr.max(initial=0)
                factor = 255.0 if top <= 1.0 else (255.0 / 65535.0 if top > 255 else 1.0)
                gray = np.clip(np.rint(arr * factor), 0, 255).astype(np.uint8)
                out = np.repeat(gray[..., None], 3, axis=2)
            else:
                if mode == "P" and "transparency" in img.info:
                    img = img.convert("RGBA")
                out = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise DecodeError("not a recognised image format") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"{type(exc).__name__}: {exc}") from None
    if out.ndim != 3 or out.shape[2] != 3 or 0 in out.shape:
        raise DecodeError(f"decoded to an unusable array of shape {out.shape}")
    return np.ascontiguousarray(out)
