import hashlib
import zipfile
from pathlib import Path

import pytest

from pointseg import download
from pointseg.errors import PointsegError


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small zip laid out like LandCover.ai's (one top folder), registered with its real MD5."""
    path = tmp_path / "source" / "landcover.ai.v1.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("landcover.ai.v1/images/M-33-0.tif", b"image bytes")
        bundle.writestr("landcover.ai.v1/masks/M-33-0.tif", b"mask bytes")
        bundle.writestr("landcover.ai.v1/train.txt", "M-33-0_0\n")
    spec = download.DOWNLOADS["landcoverai"]
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setitem(
        download.DOWNLOADS, "landcoverai", download.Download(path.as_uri(), md5, spec.folder, spec.note)
    )
    return path


def test_download_verifies_and_unpacks(archive: Path, tmp_path: Path) -> None:
    progress: list[int] = []
    folder = download.download_dataset(
        "landcoverai", tmp_path / "data", lambda done, total: progress.append(done)
    )
    assert folder == tmp_path / "data" / "landcover.ai"
    assert (folder / "images" / "M-33-0.tif").read_bytes() == b"image bytes"
    assert (folder / "train.txt").is_file()
    assert progress and progress[-1] == archive.stat().st_size
    # A second run verifies the kept archive instead of downloading it again.
    archive.unlink()
    assert download.download_dataset("landcoverai", tmp_path / "data") == folder


def test_checksum_mismatch_removes_the_download(archive: Path, tmp_path: Path, monkeypatch) -> None:
    spec = download.DOWNLOADS["landcoverai"]
    monkeypatch.setitem(
        download.DOWNLOADS, "landcoverai", download.Download(spec.url, "0" * 32, spec.folder, "")
    )
    with pytest.raises(PointsegError, match="checksum mismatch"):
        download.download_dataset("landcoverai", tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []


def test_an_existing_archive_that_fails_its_checksum_is_kept(archive: Path, tmp_path: Path) -> None:
    kept = tmp_path / "data" / archive.name
    kept.parent.mkdir()
    kept.write_bytes(b"someone's own file")
    with pytest.raises(PointsegError, match=r"checksum mismatch .* left as it is"):
        download.download_dataset("landcoverai", tmp_path / "data")
    assert kept.read_bytes() == b"someone's own file"


def test_unreachable_source_fails_fast_and_clearly(tmp_path: Path) -> None:
    with pytest.raises(PointsegError, match=r"cannot download http://127\.0\.0\.1:9/x\.zip: .*offline"):
        download.download_dataset("landcoverai", tmp_path, url="http://127.0.0.1:9/x.zip")
    assert not any(tmp_path.iterdir())


def test_datasets_without_a_public_url_say_where_to_look(tmp_path: Path) -> None:
    with pytest.raises(PointsegError, match="Kaggle login"):
        download.download_dataset("deepglobe", tmp_path)
