"""The validation batch a converted (FP16) model is checked on: the recipe's validation images,
prepared exactly as the cell prepares its views."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from controller.inference.preprocess import Preprocessor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def validation_batch(folder: Path | None, preprocess: Preprocessor, limit: int = 32) -> np.ndarray | None:
    """Up to `limit` images of `folder` (sorted by name) as one NCHW float32 batch; None without a
    folder. Raises ValueError for a missing folder, an empty one or an image of the wrong size."""
    if folder is None:
        return None
    from PIL import Image

    if not folder.is_dir():
        raise ValueError(f"validation images: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ValueError(f"validation images: no image in {folder}")
    ih, iw = preprocess.spec.input_hw
    batch = np.empty((len(files), 3, ih, iw), dtype=np.float32)
    for i, f in enumerate(files):
        with Image.open(f) as img:
            rgb = np.asarray(img.convert("RGB"))
        try:
            preprocess(rgb, batch[i])
        except ValueError as exc:
            raise ValueError(f"validation image {f.name}: {exc}") from exc
    return batch
