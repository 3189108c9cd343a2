"""Uploaded images: recognised by their first bytes, checked, and opened by GDAL from memory.

An upload's type is judged by its magic bytes, never by its name, so a PNG named ``.txt`` is read
and a text file named ``.png`` is refused. It is then opened with rasterio's ``MemoryFile``, so
GeoTIFF, PNG and JPEG take the same path as files on disk and a GeoTIFF keeps its CRS and
transform. Everything that can be judged without decoding pixels is judged first: the size in
pixels comes from the header, so a small file that would decode to a huge image (a decompression
bomb) is refused before any pixel is read.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import MemoryFile

from pointseg.errors import PointsegError
from pointseg.raster import PNG_SIGNATURE, png_problem

MAGIC_BYTES = (
    (PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "GTiff"),  # TIFF, little-endian
    (b"MM\x00*", "GTiff"),  # TIFF, big-endian
    (b"II+\x00", "GTiff"),  # BigTIFF, little-endian
    (b"MM\x00+", "GTiff"),  # BigTIFF, big-endian
)
"""First bytes of each accepted format, and the GDAL driver that reads it."""

DEFAULT_NAME = "upload"
MIB = 2**20


class UploadError(PointsegError):
    """A problem with an uploaded image, with the HTTP status code that describes it.

    Attributes:
        status_code: 400 (nothing sent), 413 (too large), 415 (not an image), 422 (unreadable).
    """

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class Upload:
    """The bytes of an uploaded image, its (sanitised) file name and the GDAL driver its magic bytes name."""

    data: bytes
    name: str
    driver: str

    @classmethod
    def sniff(cls, data: bytes, filename: str | None) -> Upload:
        """Recognise an upload by its first bytes.

        Raises:
            UploadError: 400 if ``data`` is empty, 415 if it starts like no PNG, JPEG or TIFF.
        """
        name = safe_filename(filename)
        if not data:
            raise UploadError(400, f"{name}: the file is empty; expected a GeoTIFF, PNG or JPEG image")
        driver = next((driver for magic, driver in MAGIC_BYTES if data.startswith(magic)), None)
        if driver is None:
            raise UploadError(
                415,
                f"{name}: not a GeoTIFF, PNG or JPEG image (its first bytes are {data[:8]!r}); "
                "the type is judged by the file's content, not its name",
            )
        return cls(data, name, driver)

    @property
    def stem(self) -> str:
        """The file name without its suffix."""
        return self.name.rsplit(".", 1)[0] or DEFAULT_NAME


def upload_limit_message(max_upload_bytes: int) -> str:
    """The 413 message for an upload over the size limit."""
    size = f"{max_upload_bytes // MIB} MiB" if max_upload_bytes % MIB == 0 else f"{max_upload_bytes:,} bytes"
    return (
        f"the upload is larger than this server's limit of {size} (--max-upload-mb); "
        "send a smaller image or cut it into tiles"
    )


def safe_filename(filename: str | None) -> str:
    """Return the last part of a client-sent file name, cut to 100 characters of ``[A-Za-z0-9._-]``."""
    base = re.split(r"[\\/]", filename or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:100]
    return cleaned or DEFAULT_NAME


@contextlib.contextmanager
def open_upload(upload: Upload, max_pixels: int) -> Iterator[rasterio.io.DatasetReader]:
    """Open an upload with GDAL from memory, after the checks that need no pixels.

    Input problems found while the dataset is in use (pixels that cannot be decoded, a band count
    the model cannot take: any :class:`PointsegError`) become 422 errors that name the upload.

    Raises:
        UploadError: 422 if the file is truncated, corrupt or not decodable, 413 if its header
            declares more than ``max_pixels`` pixels.
    """
    if upload.driver == "PNG" and (problem := png_problem(upload.data)) is not None:
        raise UploadError(422, f"{upload.name}: {problem}; expected a complete, undamaged PNG")
    with MemoryFile(upload.data, filename=upload.name) as memory, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            dataset = memory.open(driver=upload.driver)
        except RasterioIOError as error:
            raise UploadError(
                422,
                f"{upload.name}: cannot be read as a {upload.driver} image ({error}); "
                "the file may be truncated or corrupt",
            ) from error
        with dataset:
            pixels = dataset.width * dataset.height
            if pixels > max_pixels:
                raise UploadError(
                    413,
                    f"{upload.name}: {dataset.width:,} x {dataset.height:,} = {pixels:,} pixels, more than "
                    f"this server's limit of {max_pixels:,} (--max-pixels); send a smaller image or cut it "
                    "into tiles",
                )
            try:
                yield dataset
            except UploadError:
                raise
            except PointsegError as error:
                raise UploadError(422, str(error).replace(dataset.name, upload.name)) from error
