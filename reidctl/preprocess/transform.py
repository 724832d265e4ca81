"""Image bytes -> one model-input tensor (OpenCV decode, resize, normalise, CHW).

The pipeline, per image (the order the Ascend port's reference script uses):

1. decode the file's bytes with ``cv2.imdecode`` (so any path, unicode included, works),
   ignoring EXIF orientation like PIL does;
2. resize the uint8 image to ``width`` x ``height`` with the spec's interpolation;
3. flip horizontally when asked;
4. scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel, in the spec's
   colour order, laid out CHW.

Step 4 is a per-channel look-up table on the uint8 pixels, computed in float64 and rounded
once to the output dtype: every value equals ``(x / 255 - mean) / std`` correctly rounded, at
a fraction of the cost of float arithmetic on the whole image. ``uint8`` output skips the
normalisation (for models that normalise in their graph).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from reidctl.errors import BadDataError, InputError
from reidctl.specs import PreprocessSpec

DTYPES: tuple[str, ...] = ("float32", "float16", "uint8")
CV2_INTERPOLATION: dict[str, int] = {
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
}
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
#: the largest image decoded, in pixels (width x height): 50 megapixels, ~150 MB as BGR.
#: Larger images (or headers that claim them: decompression bombs) are bad files.
DEFAULT_MAX_PIXELS = 50_000_000
#: OpenCV refuses more than this many pixels whatever --max-pixels says, unless the
#: environment variable OPENCV_IO_MAX_IMAGE_PIXELS is raised before OpenCV loads
OPENCV_MAX_PIXELS = 1 << 30


class BadImageError(BadDataError):
    """An image file that cannot be read or decoded, or is truncated."""


@dataclass(frozen=True)
class TensorSettings:
    """What every tensor of a preprocessed set looks like.

    ``dtype`` is ``float32``, ``float16`` or ``uint8`` (raw 0-255 pixels in ``spec.color``
    order); ``flip`` stores every image mirrored left-right. ``max_pixels`` bounds the
    images decoded (width x height; :data:`DEFAULT_MAX_PIXELS`).
    """

    spec: PreprocessSpec
    dtype: str = "float32"
    flip: bool = False
    #: decode limit (width x height, pixels): larger images are bad files (not stored)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        if int(self.max_pixels) < 1:
            raise InputError(f"--max-pixels must be at least 1, got {self.max_pixels}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return (3, self.spec.height, self.spec.width)

    @property
    def np_dtype(self) -> np.dtype:
        """The little-endian numpy dtype of the tensor files."""
        return np.dtype(self.dtype).newbyteorder("<")

    @property
    def nbytes(self) -> int:
        """Size of one tensor file in bytes (``C*H*W*itemsize``)."""
        c, h, w = self.shape
        return c * h * w * self.np_dtype.itemsize


def truncation_reason(data: bytes) -> str | None:
    """Why ``data`` looks cut short, or ``None``.

    OpenCV decodes a truncated JPEG without failing (it fills the missing rows with grey), so
    the end marker is checked: a JPEG must have an EOI marker after its last start-of-scan,
    a PNG its ``IEND`` chunk. Other formats rely on the decoder.
    """
    if len(data) == 0:
        return "empty file"
    if data[:2] == b"\xff\xd8":
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
            return "truncated JPEG (no end-of-image marker after the last scan)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-32:]:
        return "truncated PNG (no IEND chunk)"
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` in pixels as the file's header states it, read without decoding
    (JPEG frame header, PNG IHDR, GIF, BMP, WebP), or ``None`` for other formats."""
    try:
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
            return w, h
        if data[:2] == b"BM" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            chunk = data[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
                return w, h
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    except struct.error:
        return None
    return None


def _too_large(source: str, w: int, h: int, max_pixels: int, what: str) -> BadImageError:
    return BadImageError(
        f"{source}: {what} {w}x{h} pixels ({w * h / 1e6:.1f} MP), more than the limit of "
        f"{max_pixels / 1e6:g} MP (--max-pixels {max_pixels}); a decompression bomb or an "
        "image far larger than a person crop"
    )


def decode_image(
    data: bytes, source: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode image bytes to an ``H x W x 3`` uint8 BGR array.

    Raises :class:`BadImageError` naming ``source`` for empty, truncated or undecodable data,
    and for images of more than ``max_pixels`` pixels (width x height): the header's size is
    read before decoding (JPEG, PNG, GIF, BMP, WebP), so a small file that claims a huge
    image is refused without allocating it; other formats are checked after decoding.
    OpenCV itself refuses more than :data:`OPENCV_MAX_PIXELS` (a bad file too).
    """
    reason = truncation_reason(data)
    if reason is not None:
        raise BadImageError(f"{source}: {reason}")
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise _too_large(source, *size, max_pixels, "its header states")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    except cv2.error as e:
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        raise BadImageError(
            f"{source}: OpenCV cannot decode it ({lines[-1].strip() if lines else 'cv2.error'})"
        ) from None
    if img is None or img.size == 0:
        raise BadImageError(f"{source}: not a decodable image")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise _too_large(source, img.shape[1], img.shape[0], max_pixels, "it decodes to")
    return img


class ImageTransform:
    """A decoded BGR image -> a ``(3, H, W)`` tensor of ``settings.dtype``.

    Build once per process and call for each image; the look-up tables are precomputed.
    """

    def __init__(self, settings: TensorSettings) -> None:
        self.settings = settings
        spec = settings.spec
        self._size = (spec.width, spec.height)  # cv2 wants (width, height)
        self._interp = CV2_INTERPOLATION[spec.interpolation]
        # output channel c reads BGR channel _src[c]
        self._src = (2, 1, 0) if spec.color == "rgb" else (0, 1, 2)
        self._lut: np.ndarray | None = None
        if settings.dtype != "uint8":
            x = np.arange(256, dtype=np.float64) / 255.0
            mean = np.asarray(spec.mean, np.float64)[:, None]
            std = np.asarray(spec.std, np.float64)[:, None]
            self._lut = ((x[None, :] - mean) / std).astype(settings.np_dtype)
        # cv2.LUT maps a uint8 plane straight into a float32 plane, about 4x faster than
        # np.take; same table, so the same bits. float16 stays on np.take (cv2 lacks it).
        self._cv_luts: list[np.ndarray] | None = None
        if self._lut is not None and self._lut.dtype == np.float32:
            self._cv_luts = [np.ascontiguousarray(row.reshape(1, 256)) for row in self._lut]

    def resize(self, bgr: np.ndarray) -> np.ndarray:
        """Resize (and flip) an ``H x W x 3`` uint8 image to the model's size."""
        if bgr.shape[1] != self._size[0] or bgr.shape[0] != self._size[1]:
            bgr = cv2.resize(bgr, self._size, interpolation=self._interp)
        if self.settings.flip:
            bgr = cv2.flip(bgr, 1)
        return bgr

    def __call__(self, bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The tensor for ``bgr`` (``H x W x 3`` uint8), written into ``out`` when given."""
        img = self.resize(bgr)
        if out is None:
            out = np.empty(self.settings.shape, self.settings.np_dtype)
        planes = cv2.split(img)
        for c, src in enumerate(self._src):
            if self._lut is None:
                out[c] = planes[src]
            elif self._cv_luts is not None:
                plane = out[c]
                res = cv2.LUT(planes[src], self._cv_luts[c], dst=plane)
                if not np.shares_memory(res, plane):  # cv2 could not write in place
                    plane[...] = res
            else:
                np.take(self._lut[c], planes[src], out=out[c])
        return out

    def from_bytes(self, data: bytes, source: str = "<bytes>") -> np.ndarray:
        """Decode and transform in one call."""
        return self(decode_image(data, source))
