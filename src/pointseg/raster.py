"""Reading rasters and writing outputs safely.

Every image, mask and label map goes through rasterio (GDAL), so GeoTIFF, PNG and JPEG share one
code path, large files can be read by window, and a raster's CRS and transform are kept.
Every file pointseg writes goes first to a temporary name beside its destination and is then
renamed, so an interrupted or failed run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from pointseg.colors import palette_colormap
from pointseg.errors import PointsegError
from pointseg.schema import IGNORE_INDEX, ClassSchema

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class RasterInfo:
    """What a raster's header says: size, bands, dtype and georeferencing."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine | None
    nodata: float | None

    @property
    def is_georeferenced(self) -> bool:
        """Whether the raster has a CRS (and so real-world coordinates)."""
        return self.crs is not None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
"""The eight bytes every PNG file begins with."""


def png_problem(data: bytes) -> str | None:
    """Walk a PNG's chunks without decoding pixels; describe the first sign of truncation or corruption.

    GDAL's PNG driver decodes a PNG cut short without raising an error (the missing rows come out
    as garbage), so a PNG is checked here: it must begin with the PNG signature (an empty or text
    file is "not a PNG", not a truncated one), every chunk must fit in the file and match its CRC,
    and the file must reach its ``IEND`` chunk.

    Returns:
        ``None`` for a complete PNG, else what is wrong and where.
    """
    if not data.startswith(PNG_SIGNATURE):
        found = "an empty file" if not data else f"{len(data):,} bytes beginning {bytes(data[:8])!r}"
        return f"not a PNG: {found}, without the PNG signature"
    view = memoryview(data)
    position = 8
    while position + 12 <= len(data):
        length, kind = struct.unpack(">I4s", view[position : position + 8])
        end = position + 12 + length
        label = kind.decode("latin-1")
        if end > len(data):
            return (
                f"the PNG is truncated: its '{label}' chunk at byte {position:,} needs {length:,} bytes, "
                f"but the file ends at byte {len(data):,}"
            )
        if zlib.crc32(view[position + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            return f"the PNG is corrupt: its '{label}' chunk at byte {position:,} fails its CRC check"
        if kind == b"IEND":
            return None
        position = end
    return f"the PNG is truncated: it ends at byte {len(data):,} before its closing 'IEND' chunk"


@functools.lru_cache(maxsize=4096)
def _png_file_problem(path: Path, size: int, modified_ns: int) -> str | None:
    """:func:`png_problem` of a file, remembered per (path, size, modification time)."""
    return png_problem(path.read_bytes())


@contextlib.contextmanager
def open_raster(path: str | Path) -> Iterator[rasterio.io.DatasetReader]:
    """Open a raster for reading, turning GDAL's errors into a message that names the file.

    PNG files are also checked chunk by chunk, since GDAL decodes a truncated PNG without error.

    Raises:
        PointsegError: if the file is missing, is not a raster GDAL can read, or is a truncated or
            corrupt PNG.
    """
    path = Path(path)
    if not path.is_file():
        raise PointsegError(f"{path}: no such file")
    if path.suffix.lower() == ".png":
        status = path.stat()
        problem = _png_file_problem(path, status.st_size, status.st_mtime_ns)
        if problem is not None:
            raise PointsegError(f"{path}: {problem}; expected a complete PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            dataset = rasterio.open(path)
        except RasterioIOError as error:
            raise PointsegError(
                f"{path}: not a readable raster ({error}); expected a GeoTIFF, PNG or JPEG image"
            ) from error
    with dataset:
        yield dataset


def raster_info(path: str | Path) -> RasterInfo:
    """Read a raster's header without reading its pixels."""
    with open_raster(path) as dataset:
        return _info(Path(path), dataset)


def _info(path: Path, dataset: rasterio.io.DatasetReader) -> RasterInfo:
    georeferenced = dataset.crs is not None
    return RasterInfo(
        path=path,
        width=dataset.width,
        height=dataset.height,
        count=dataset.count,
        dtype=dataset.dtypes[0],
        crs=dataset.crs if georeferenced else None,
        transform=dataset.transform if georeferenced else None,
        nodata=dataset.nodata,
    )


def read_window(
    path: str | Path, window: Window | None = None, out_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Read ``(C, H, W)`` pixels of a raster, optionally a window of it or a decimated copy.

    Args:
        path: Raster file.
        window: Region to read; ``None`` reads the whole raster. Windows reaching past the edge
            are cut to the raster.
        out_shape: ``(H, W)`` to resample to while reading (nearest), for cheap overviews.

    Raises:
        PointsegError: if the file cannot be decoded (for example, a truncated JPEG).
    """
    with open_raster(path) as dataset:
        return read_pixels(dataset, window, out_shape)


def read_pixels(
    dataset: rasterio.io.DatasetReader, window: Window | None = None, out_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Read ``(C, H, W)`` pixels from an open raster (see :func:`read_window`)."""
    shape = None if out_shape is None else (dataset.count, *out_shape)
    try:
        return dataset.read(window=window, out_shape=shape)
    except RasterioIOError as error:
        reason = error.__cause__ or error  # GDAL's own message; rasterio's says "see previous exception"
        raise PointsegError(
            f"{dataset.name}: cannot decode pixels ({reason}); the file may be truncated"
        ) from error


def read_mask(path: str | Path, schema: ClassSchema, window: Window | None = None) -> np.ndarray:
    """Read a mask and decode it to ``(H, W)`` uint8 labels with ``IGNORE_INDEX`` for ignored pixels.

    Palette (mode ``P``) PNGs are expanded through their colour table for ``rgb`` schemas, and an
    alpha band is dropped.

    Raises:
        PointsegError: for unreadable files and for values that are not in ``schema``.
    """
    with open_raster(path) as dataset:
        raw = read_pixels(dataset, window)
        if schema.mask_encoding == "rgb" and raw.shape[0] == 1:
            raw = _expand_palette(dataset, raw[0], path)
        elif schema.mask_encoding == "rgb" and raw.shape[0] == 4:
            raw = raw[:3]
    return schema.decode_mask(raw, str(path))


def _expand_palette(dataset: rasterio.io.DatasetReader, indices: np.ndarray, path: str | Path) -> np.ndarray:
    try:
        colormap = dataset.colormap(1)
    except ValueError as error:
        raise PointsegError(
            f"{path}: single-band mask without a colour table, but the schema expects RGB colours"
        ) from error
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index, rgba in colormap.items():
        palette[index] = rgba[:3]
    return np.moveaxis(palette[indices], -1, 0)


def check_output_file(path: str | Path) -> None:
    """Raise a ``PointsegError`` now if a file could never be written at ``path``.

    Commands that write a file after long work (``evaluate --json``) call it first, so that a path
    that names a folder, or lies under a file, fails before the work rather than after it.
    """
    path = Path(path)
    if path.is_dir():
        raise PointsegError(f"{path}: is a folder; expected the path of a file to write")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise PointsegError(f"{path}: {parent} is a file, not a folder; expected a path under a folder")


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file keeps ``path``'s suffix so that GDAL picks the right driver, and gets the
    permissions a plain ``open`` would give (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    Its name carries this process's id, so that :func:`remove_stale_work_files` can tell the
    leftovers of a killed run from the files of a running one.

    Raises:
        PointsegError: before anything is written, if ``path`` is a folder or lies under a file.
    """
    path = Path(path)
    check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temporary_path = path.with_name(f".{path.stem}.{work_tag()}.partial{path.suffix}")
        try:
            os.close(os.open(temporary_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield temporary_path
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)
        for sidecar in temporary_path.parent.glob(temporary_path.name + ".*"):  # GDAL's .aux.xml
            sidecar.unlink(missing_ok=True)


def work_tag() -> str:
    """``<pid>-<12 hex digits>``: the unique part of a work file's name, naming the process that owns it."""
    return f"{os.getpid()}-{secrets.token_hex(6)}"


STALE_WORK_NAME = re.compile(
    r"^\.(?:pointseg-(?P<folder_pid>\d+)-|.+\.(?P<file_pid>\d+)-[0-9a-f]{12}\.(?:partial|staging|old))"
)
"""Hidden work folders (``.pointseg-<pid>-...``), partial files (``.<stem>.<pid>-<hex>.partial...``)
and staging folders (``.<name>.<pid>-<hex>.staging`` and ``.old``, see :func:`staged_directory`)."""


def process_is_running(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_work_files(folder: str | Path) -> list[Path]:
    """Remove the work folders and partial files that killed runs left in ``folder``.

    Only names that carry a process id (see :func:`work_tag`) of a process that no longer runs
    are removed; the work files of running processes are kept.

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    removed = []
    for path in folder.glob(".*") if folder.is_dir() else ():
        match = STALE_WORK_NAME.match(path.name)
        if match is None or process_is_running(int(match["folder_pid"] or match["file_pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def staged_directory(out_dir: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder whose files become ``out_dir`` only if the block succeeds.

    A run that fails half-way leaves ``out_dir`` exactly as it was. Files are merged into an
    existing ``out_dir``, unless ``replace`` is true: then the old folder is swapped out whole
    (rename, rename, delete), so no stale file from an earlier run survives beside new ones; the
    new folder keeps the old one's permissions.

    The staging folders are hidden beside ``out_dir`` and named with this process's id (see
    :func:`work_tag`); those that killed runs left there are removed first
    (:func:`remove_stale_work_files`).

    Raises:
        PointsegError: if ``out_dir`` exists and is not a folder (it is never replaced).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PointsegError(
            f"{out_dir}: is a file, not a folder; expected a folder (new or existing) to write into"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work_files(out_dir.parent)
    staging = _work_folder(out_dir, "staging")
    try:
        yield staging
        if replace and out_dir.exists():
            staging.chmod(stat.S_IMODE(out_dir.stat().st_mode))
            retired = _work_folder(out_dir, "old")
            os.replace(out_dir, retired / "old")
            os.replace(staging, out_dir)
            shutil.rmtree(retired, ignore_errors=True)
            return
        out_dir.mkdir(exist_ok=True)
        for item in sorted(staging.rglob("*")):
            if item.is_file():
                target = out_dir / item.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _work_folder(beside: Path, kind: str) -> Path:
    """Create the empty hidden folder ``.<name>.<work_tag>.<kind>`` beside ``beside`` (private: 0o700)."""
    while True:
        folder = beside.with_name(f".{beside.name}.{work_tag()}.{kind}")
        try:
            folder.mkdir(mode=0o700)
            return folder
        except FileExistsError:
            continue


def geotiff_profile(
    width: int,
    height: int,
    crs: CRS | None = None,
    transform: Affine | None = None,
    dtype: str = "uint8",
    nodata: float = IGNORE_INDEX,
    block_size: int = 256,
) -> dict[str, Any]:
    """Creation options of every single-band GeoTIFF pointseg writes.

    Tiled, DEFLATE-compressed, with nodata, BigTIFF when needed, and ``crs``/``transform`` when
    the source has them.
    """
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "count": 1,
        "dtype": dtype,
        "width": width,
        "height": height,
        "tiled": True,
        "blockxsize": block_size,
        "blockysize": block_size,
        "compress": "deflate",
        "nodata": nodata,
        "BIGTIFF": "IF_SAFER",
    }
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    return profile


def write_label_raster(
    path: str | Path,
    labels: np.ndarray,
    schema: ClassSchema,
    crs: CRS | None = None,
    transform: Affine | None = None,
) -> None:
    """Write ``(H, W)`` uint8 labels atomically: a GeoTIFF with colour table, or a PNG.

    GeoTIFFs (``.tif``/``.tiff``) are tiled and DEFLATE-compressed, carry ``crs`` and ``transform``
    when given, mark ``IGNORE_INDEX`` as nodata and embed the class colours so GIS software shows
    the map in colour. Other suffixes are written as single-band PNG.
    """
    path = Path(path)
    height, width = labels.shape
    if path.suffix.lower() in (".tif", ".tiff"):
        profile = geotiff_profile(width, height, crs, transform)
    else:
        profile = {"driver": "PNG", "count": 1, "dtype": "uint8", "width": width, "height": height}
    with atomic_output(path) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(temporary, "w", **profile) as dataset:
            dataset.write(labels.astype(np.uint8, copy=False), 1)
            if profile["driver"] == "GTiff":
                dataset.write_colormap(1, palette_colormap(schema))
