"""``pointseg data download``: fetch a public dataset with a checksum and a progress bar.

Only datasets with a stable public URL can be scripted. LandCover.ai v1 is one (about 1.5 GB);
DeepGlobe Land Cover is distributed through Kaggle behind a login, so the README says where to
get it instead.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pointseg.errors import PointsegError
from pointseg.raster import atomic_output, staged_directory

CHUNK = 1 << 20
TIMEOUT_S = 15


@dataclass(frozen=True)
class Download:
    """A dataset archive: where it is, its MD5, and the folder it unpacks to."""

    url: str
    md5: str
    folder: str
    note: str


DOWNLOADS = {
    "landcoverai": Download(
        url="https://landcover.ai.linuxpolska.com/download/landcover.ai.v1.zip",
        md5="3268c89070e8734b4e91d531c0617e03",
        folder="landcover.ai",
        note="LandCover.ai v1 (Boguszewski et al., CC BY-NC-SA 4.0): 41 orthophotos, masks, split lists",
    ),
}


def find_download(name: str) -> Download:
    """The archive of a dataset that can be downloaded by script.

    Raises:
        PointsegError: for any other name, saying where to get DeepGlobe.
    """
    if name not in DOWNLOADS:
        raise PointsegError(
            f"cannot download '{name}': scripted downloads exist for {', '.join(DOWNLOADS)}. "
            "DeepGlobe Land Cover needs a Kaggle login: see the README's 'Datasets' section"
        )
    return DOWNLOADS[name]


def fetch(url: str, target: Path, on_progress: Callable[[int, int | None], None] | None = None) -> str:
    """Stream ``url`` into ``target`` (atomically) and return the content's MD5.

    Raises:
        PointsegError: when the host cannot be reached or the transfer breaks off.
    """
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, atomic_output(target) as temporary:
            total = response.headers.get("Content-Length")
            size = int(total) if total else None
            done = 0
            with temporary.open("wb") as file:
                while chunk := response.read(CHUNK):
                    file.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if on_progress is not None:
                        on_progress(done, size)
    except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise PointsegError(
            f"cannot download {url}: {reason}. Check the network (this machine may be offline), or download "
            "the file elsewhere and unpack it into the dataset folder yourself"
        ) from error
    return digest.hexdigest()


def download_dataset(
    name: str,
    root: Path,
    on_progress: Callable[[int, int | None], None] | None = None,
    url: str | None = None,
) -> Path:
    """Download, verify and unpack a dataset under ``root``; return the dataset folder.

    The archive is kept beside it (``root/<archive name>``) so a rerun verifies it instead of
    downloading again. ``url`` overrides the source (a mirror, or a ``file://`` path).

    Raises:
        PointsegError: for an unknown name, no network, a checksum mismatch or a bad archive;
            nothing half-written is left behind.
    """
    spec = find_download(name)
    source = url or spec.url
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(source).name
    if archive.is_file():
        md5 = file_md5(archive)
        if md5 != spec.md5:  # not ours to delete: the user's own copy, or an older release
            raise PointsegError(
                f"{archive}: checksum mismatch (MD5 {md5}, expected {spec.md5}); the file was left as it "
                "is. Move it away to download the dataset again"
            )
    else:
        md5 = fetch(source, archive, on_progress)
        if md5 != spec.md5:
            archive.unlink()
            raise PointsegError(
                f"{source}: checksum mismatch (MD5 {md5}, expected {spec.md5}); the download was removed. "
                "Try again; if it persists, the published file has changed"
            )
    folder = root / spec.folder
    try:
        with zipfile.ZipFile(archive) as bundle, staged_directory(folder, replace=True) as staging:
            bundle.extractall(staging)
            _lift_single_top_folder(staging)
    except zipfile.BadZipFile as error:
        raise PointsegError(f"{archive}: not a valid zip archive ({error})") from error
    return folder


def file_md5(path: Path) -> str:
    """MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _lift_single_top_folder(folder: Path) -> None:
    """If an archive unpacked into one top folder, move its contents up a level."""
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        for item in inner.iterdir():
            shutil.move(str(item), folder / item.name)
        inner.rmdir()
