"""ROI crop, resize and normalisation of one view, straight into a preallocated batch slot.

The resize is a nearest-neighbour gather through index maps computed once per recipe, and
the normalisation writes into the batch buffer: one pass over the pixels, no temporaries
that grow with the frame rate. On a GPU the view is only cropped and resized into a uint8 HWC
slot (`to_uint8`: a copy, or a gather without temporaries) and the model normalises it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PreprocessSpec:
    """Input geometry: ROI (x, y, w, h) in the camera image, model size (h, w), mean and std per channel."""

    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    roi: tuple[int, int, int, int] | None = None
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (64.0, 64.0, 64.0)


class Preprocessor:
    """Writes NCHW float32 model input for one HWC uint8 image into `batch[i]`."""

    def __init__(self, spec: PreprocessSpec) -> None:
        h, w = spec.image_hw
        x, y, rw, rh = spec.roi if spec.roi else (0, 0, w, h)
        if not (x >= 0 and y >= 0 and x + rw <= w and y + rh <= h and rw > 0 and rh > 0):
            raise ValueError(f"ROI {spec.roi} does not fit the {w}x{h} image")
        ih, iw = spec.input_hw
        self.spec = spec
        self._rows = (y + (np.arange(ih) * rh) // ih).astype(np.intp)
        self._cols = (x + (np.arange(iw) * rw) // iw).astype(np.intp)
        self._identity = (x, y, rw, rh) == (0, 0, w, h) and (ih, iw) == (h, w)
        # Pixel indices into the image seen as (h*w, 3), for the uint8 gather.
        self._pixels = (self._rows[:, None] * w + self._cols[None, :]).reshape(-1)
        self._scale = (1.0 / np.asarray(spec.std, dtype=np.float32)).reshape(3, 1, 1)
        self._offset = (
            -np.asarray(spec.mean, dtype=np.float32) / np.asarray(spec.std, dtype=np.float32)
        ).reshape(3, 1, 1)

    def __call__(self, image: np.ndarray, out: np.ndarray) -> None:
        """`image` HxWx3 uint8 → `out` 3xHxW float32 (a slot of the batch buffer)."""
        if image.shape != (*self.spec.image_hw, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame {image.shape} {image.dtype}, expected {(*self.spec.image_hw, 3)} uint8")
        src = image if self._identity else image[self._rows[:, None], self._cols[None, :]]
        # One pass casts and scales (uint8 → float32 inside the multiply), one adds: memory-bound.
        np.multiply(src.transpose(2, 0, 1), self._scale, out=out, casting="unsafe")
        out += self._offset

    def to_uint8(self, image: np.ndarray, out: np.ndarray) -> None:
        """`image` HxWx3 uint8 → `out` (model h, w, 3) uint8: the ROI, resized; not normalised."""
        if image.shape != (*self.spec.image_hw, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame {image.shape} {image.dtype}, expected {(*self.spec.image_hw, 3)} uint8")
        if self._identity:
            np.copyto(out, image)
        else:
            np.take(image.reshape(-1, 3), self._pixels, axis=0, out=out.reshape(-1, 3))
