"""Image folders as model input: decode with Pillow, resize, center-crop, normalize, order channels and lay out.

A folder holds either one sub-folder per class (labels are the sub-folders' indices in sorted order, as
torchvision's ImageFolder numbers them) or the images themselves (no labels). Images are decoded when a batch
asks for them, in any order (an ImageFolder is a DataSource), so that every consumer holds one batch at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError, DataError
from .sources import Batch, DataSource

__all__ = ["Preprocess", "ImageFolder", "IMAGE_SUFFIXES", "CHANNEL_ORDERS", "LAYOUTS", "parse_size", "parse_floats",
           "check_model_takes_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
CHANNEL_ORDERS = ("rgb", "bgr", "gray")
LAYOUTS = ("nchw", "nhwc")


def _pil():
    """Pillow's Image module, imported when images are read."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading an image folder needs Pillow: pip install pillow") from None
    return Image


def _size(value, name: str) -> tuple[int, int] | None:
    """None, one side, or (height, width); every side a whole number >= 1."""
    if value is None:
        return None
    sides = (value,) if isinstance(value, int) else tuple(value)
    if len(sides) not in (1, 2) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sides):
        raise ConfigError(f"{name} (--{name}) must be one whole number >= 1 or height,width, got {value!r}")
    return (sides[0], sides[0]) if name == "crop" and len(sides) == 1 else sides


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input, in this order: decode as `channels`, resize, center-crop, multiply by
    `scale`, subtract `mean` and divide by `std` (per channel, in the order of `channels`), lay out as `layout`.

    resize: one number scales the shorter side to it (aspect kept, bilinear); height,width resizes to exactly that.
    crop: the center height x width (one number: a square). mean/std: one value, or one per channel.
    """

    resize: int | tuple[int, ...] | None = None
    crop: int | tuple[int, ...] | None = None
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: str = "rgb"
    layout: str = "nchw"

    def __post_init__(self):
        object.__setattr__(self, "resize", _size(self.resize, "resize"))
        object.__setattr__(self, "crop", _size(self.crop, "crop"))
        if self.channels not in CHANNEL_ORDERS:
            raise ConfigError(f"channels (--channels) must be one of {', '.join(CHANNEL_ORDERS)}, got {self.channels!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout (--layout) must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"scale (--scale) must be a finite number > 0, got {self.scale!r}")
        count = 1 if self.channels == "gray" else 3
        for name in ("mean", "std"):
            values = tuple(float(v) for v in np.atleast_1d(getattr(self, name)))
            if len(values) not in (1, count) or not all(math.isfinite(v) for v in values):
                raise ConfigError(f"{name} (--{name}) needs 1 or {count} finite values for {self.channels} images, "
                                  f"got {getattr(self, name)!r}")
            object.__setattr__(self, name, values)
        if not all(v > 0 for v in self.std):
            raise ConfigError(f"std (--std) values must be > 0, got {self.std!r}")

    def __call__(self, image) -> np.ndarray:
        """One decoded Pillow image -> float32 array in the configured layout (CHW or HWC)."""
        Image = _pil()

        image = image.convert("L" if self.channels == "gray" else "RGB")
        if self.resize is not None:
            width, height = image.size
            if len(self.resize) == 1:  # shorter side to resize[0], the other in proportion
                side = self.resize[0]
                size = (side, max(1, round(height * side / width))) if width <= height else \
                    (max(1, round(width * side / height)), side)
            else:
                size = (self.resize[1], self.resize[0])
            image = image.resize(size, Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if self.crop is not None:
            height, width = pixels.shape[:2]
            crop_h, crop_w = self.crop
            if crop_h > height or crop_w > width:
                raise DataError(f"--crop {crop_h}x{crop_w} is larger than the {height}x{width} image; resize first")
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
            pixels = pixels[top:top + crop_h, left:left + crop_w]
        if self.channels == "bgr":
            pixels = pixels[:, :, ::-1]
        pixels = (pixels * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1) if self.layout == "nchw" else pixels, dtype=np.float32)


def parse_size(text: str | None, option: str) -> tuple[int, ...] | None:
    """"224" or "224,256" (height,width) from the command line."""
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} takes a whole number or height,width, got {text!r}") from None


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """"0.485,0.456,0.406" from the command line."""
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, got {text!r}") from None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFolder(DataSource):
    """The images of a folder, decoded and preprocessed on demand (as `dtype`), with labels when it has class
    sub-folders."""

    def __init__(self, path: str | os.PathLike, preprocess: Preprocess, input_name: str,
                 dtype: np.dtype = np.dtype(np.float32)):
        self.path = Path(path)
        self.preprocess = preprocess
        self.input_name = input_name
        self.dtype = np.dtype(dtype)
        if not self.path.is_dir():
            raise DataError(f"image folder not found: {self.path}")
        classes = sorted(p for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))
        loose = _images_in(self.path)
        if classes and loose:
            raise DataError(f"{self.path} holds both images and sub-folders: put every image in its class's "
                            f"sub-folder, or use a folder of images alone (unlabeled)")
        self.classes: list[str] | None = [p.name for p in classes] if classes else None
        if classes:
            self.files, labels = [], []
            for index, folder in enumerate(classes):
                images = _images_in(folder)
                if not images:
                    raise DataError(f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
                self.files += images
                labels += [index] * len(images)
            self.labels: np.ndarray | None = np.asarray(labels, dtype=np.int64)
        else:
            self.files, self.labels = loose, None
        if not self.files:
            raise DataError(f"{self.path} has no images ({', '.join(IMAGE_SUFFIXES)}) and no class sub-folders")
        self._shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> np.ndarray:
        """Image `index`, preprocessed; every image must come out the same shape."""
        Image = _pil()
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image.load()
                array = self.preprocess(image)
        except (Image.UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot decode image {path}: {exc}") from None
        if self._shape is None:
            self._shape, self._first = array.shape, path
        elif array.shape != self._shape:
            raise DataError(f"images come out in different shapes: {self._first} {self._shape}, {path} "
                            f"{array.shape}; give --resize and --crop to make them one size")
        return array

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        if self._shape is None:
            self.load(0)
        return {self.input_name: self._shape}

    def dtypes(self) -> dict[str, np.dtype]:
        return {self.input_name: self.dtype}

    def fingerprint(self) -> str:
        """The files' names, sizes and modification times, their labels, and the preprocessing: a folder whose
        images are rewritten, added, removed or moved between classes hashes differently."""
        digest = hashlib.sha256(json.dumps([repr(self.preprocess), self.input_name, self.dtype.str]).encode())
        labels = self.labels if self.labels is not None else np.full(len(self), -1)
        for path, label in zip(self.files, labels.tolist()):
            stat = path.stat()
            digest.update(json.dumps([path.relative_to(self.path).as_posix(), stat.st_size, stat.st_mtime_ns,
                                      label]).encode())
        return digest.hexdigest()

    def take(self, index: np.ndarray | slice) -> Batch:
        positions = range(len(self))[index] if isinstance(index, slice) else np.asarray(index).tolist()
        stacked = None
        for row, position in enumerate(positions):
            image = self.load(position)
            if stacked is None:
                stacked = np.empty((len(positions), *image.shape), dtype=self.dtype)
            stacked[row] = image
        if stacked is None:
            stacked = np.empty((0, *self.sample_shapes()[self.input_name]), dtype=self.dtype)
        return Batch({self.input_name: stacked}, None if self.labels is None else self.labels[index])

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """All images in one array (len × sample shape × 4 bytes of memory), and the labels."""
        first = self.load(0)
        stacked = np.empty((len(self), *first.shape), dtype=np.float32)
        stacked[0] = first
        for i in range(1, len(self)):
            stacked[i] = self.load(i)
        return stacked, self.labels


def check_model_takes_images(input_names: Sequence[str]) -> str:
    if len(input_names) != 1:
        raise DataError(f"an image folder feeds a model with one input; this one has {len(input_names)} "
                        f"({', '.join(input_names)}): give an .npz with one array per input")
    return input_names[0]
