"""The workspace store: projects on disk, points that `points import` reads back, 4xx for bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from workspace_data import CLASSES, TRANSFORM, write_workspace

from pointseg.errors import PointsegError
from pointseg.points import import_points
from pointseg.serving.settings import ServeSettings
from pointseg.serving.workspace import (
    ClassesUpdate,
    ClassSpec,
    NewPoint,
    NewProject,
    PointChange,
    Workspace,
    WorkspaceError,
)

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def store(tmp_path: Path) -> Workspace:
    return Workspace(write_workspace(tmp_path / "ws"))


def classes(*names: str) -> ClassesUpdate:
    by_name = {c["name"]: c for c in CLASSES}
    return ClassesUpdate(classes=[ClassSpec(**by_name[name]) for name in names])


def click(row: float, col: float, name: str) -> NewPoint:
    return NewPoint.model_validate({"row": row, "col": col, "class": name})


def test_images_lists_rasters_below_the_folder_but_not_the_workspace_state(store: Workspace) -> None:
    store.create_project(NewProject(name="p", image="plain.png"))
    listed = {image["path"]: image for image in store.images()}
    assert set(listed) == {"maps/scene.tif", "plain.png"}  # no notes.txt, nothing from .pointseg
    assert listed["maps/scene.tif"] == {
        "path": "maps/scene.tif",
        "width": 64,
        "height": 64,
        "bands": 3,
        "crs": "EPSG:32633",
    }
    assert listed["plain.png"]["crs"] is None


@pytest.mark.parametrize("image", ["../outside.tif", "/etc/passwd", "maps/../plain.png", "notes.txt"])
def test_an_image_name_from_a_client_never_becomes_a_path(store: Workspace, image: str) -> None:
    (store.root.parent / "outside.tif").write_bytes((store.root / "maps" / "scene.tif").read_bytes())
    with pytest.raises(WorkspaceError, match="not a raster of this workspace") as error:
        store.create_project(NewProject(name="p", image=image))
    assert error.value.status_code == 422


def test_points_are_geojson_in_the_image_crs_rewritten_after_every_change(store: Workspace) -> None:
    project = store.create_project(NewProject(name="p", image="maps/scene.tif"))
    project.set_classes(classes("water", "forest"))
    first = project.add_point(click(10.7, 20.2, "Water"))  # class names ignore case
    assert (first.row, first.col, first.class_name) == (10, 20, "water")
    second = project.add_point(click(30, 5, "forest"))
    written = json.loads(project.points_path.read_text())
    assert written["crs"]["properties"]["name"] == "EPSG:32633"
    x, y = TRANSFORM @ (20.5, 10.5)
    assert written["features"][0]["geometry"]["coordinates"] == [x, y]
    assert written["features"][0]["properties"] == {"id": first.id, "class": "water", "row": 10, "col": 20}
    moved = project.change_point(second.id, PointChange.model_validate({"col": 6.2, "class": "water"}))
    assert (moved.row, moved.col, moved.class_name) == (30, 6, "water")
    project.delete_point(first.id)
    assert [p.id for p in store.project(project.id).points()] == [second.id]
    assert store.project(project.id).points_per_class() == {"water": 1, "forest": 0}


def test_bad_points_are_refused_with_what_was_expected(store: Workspace) -> None:
    project = store.create_project(NewProject(name="p", image="plain.png"))
    project.set_classes(classes("water", "forest"))
    kept = project.add_point(click(1, 1, "water"))
    cases = [
        (click(40, 1, "water"), 422, "outside the image; expected rows 0 to 40 and columns 0 to 60"),
        (click(-0.1, 1, "water"), 422, "outside the image"),
        (click(float("nan"), 1, "water"), 422, "outside the image"),
        (click(1, 1, "urban"), 422, "class 'urban' is not a class of this project; expected one of: water"),
        (click(1.9, 1.2, "forest"), 409, f"already has point {kept.id}"),
    ]
    for point, status, message in cases:
        with pytest.raises(WorkspaceError, match=message) as error:
            project.add_point(point)
        assert error.value.status_code == status
    with pytest.raises(WorkspaceError, match="has no point 'nope'") as missing:
        project.delete_point("nope")
    assert missing.value.status_code == 404
    assert [p.id for p in project.points()] == [kept.id]


def test_classes_with_points_cannot_go_and_names_must_differ(store: Workspace) -> None:
    project = store.create_project(NewProject(name="p", image="plain.png"))
    project.set_classes(classes("water", "forest"))
    project.add_point(click(1, 1, "forest"))
    with pytest.raises(WorkspaceError, match=r"forest \(1 points\) would be removed") as error:
        project.set_classes(classes("water"))
    assert error.value.status_code == 409
    with pytest.raises(WorkspaceError, match="class names repeat") as repeated:
        project.set_classes(ClassesUpdate(classes=[ClassSpec(name="a", color="#000000")] * 2))
    assert repeated.value.status_code == 422
    project.set_classes(classes("forest", "urban"))  # water had no point: it may go
    assert [c.name for c in store.project(project.id).record.classes] == ["forest", "urban"]


def test_a_deleted_project_folder_is_a_404_and_is_never_recreated(store: Workspace) -> None:
    project = store.create_project(NewProject(name="p", image="plain.png"))
    project.set_classes(classes("water", "forest"))
    shutil.rmtree(project.folder)
    with pytest.raises(WorkspaceError, match="deleted or moved") as error:
        project.add_point(click(1, 1, "water"))
    assert error.value.status_code == 404
    assert not project.folder.exists()
    with pytest.raises(WorkspaceError, match=f"no project '{project.id}'"):
        store.project(project.id)
    for bad_id in ("../../etc", "zzzzzzzzzzzz", ""):
        with pytest.raises(WorkspaceError, match="no project"):
            store.project(bad_id)


@pytest.mark.parametrize("image", ["maps/scene.tif", "plain.png"])
def test_a_click_comes_back_on_its_pixel_through_points_import(
    store: Workspace, image: str, tmp_path: Path, cli: Cli
) -> None:
    project = store.create_project(NewProject(name="p", image=image))
    project.set_classes(classes("water", "forest"))
    clicks = [(0.0, 0.0, "water"), (39.99, 59.99, "forest"), (12.5, 33.9, "forest"), (7.01, 8.99, "water")]
    for row, col, name in clicks:
        project.add_point(click(row, col, name))
    placed, report = import_points(project.points_path, project.image_path, project.schema())
    assert report.kept == len(clicks)
    assert sorted(
        zip(placed.rows.tolist(), placed.cols.tolist(), placed.classes.tolist(), strict=True)
    ) == sorted((int(row), int(col), ["water", "forest"].index(name)) for row, col, name in clicks)
    schema = tmp_path / "classes.json"
    schema.write_text(json.dumps(project.schema().to_dict()))
    code, _, err = cli(
        "points",
        "import",
        project.points_path,
        "--image",
        project.image_path,
        "--schema",
        schema,
        "--out",
        tmp_path / "imported",
    )
    assert code == 0, err
    exported = json.loads((tmp_path / "imported" / f"{project.image_path.stem}.geojson").read_text())
    assert sorted(f["geometry"]["coordinates"] for f in exported["features"]) == sorted(
        f["geometry"]["coordinates"] for f in project.collection()["features"]
    )


def test_a_new_workspace_object_sees_the_same_projects(store: Workspace) -> None:
    project = store.create_project(NewProject(name="kept", image="maps/scene.tif"))
    project.set_classes(classes("water", "forest"))
    point = project.add_point(click(3, 4, "forest"))
    again = Workspace(store.root)
    assert [p.id for p in again.projects()] == [project.id]
    reopened = again.project(project.id)
    assert reopened.record == project.record and reopened.points() == [point]


def test_an_upload_is_kept_in_the_project_folder(store: Workspace) -> None:
    data = (store.root / "plain.png").read_bytes()
    project = store.create_upload_project("up", data, "PNG")
    assert project.image_path == project.folder / "image.png"
    assert project.record.image.source == "upload" and project.record.image.path == "image.png"
    assert project.image_path.read_bytes() == data


def test_a_points_file_damaged_by_hand_is_named_not_a_crash(store: Workspace) -> None:
    project = store.create_project(NewProject(name="p", image="plain.png"))
    project.points_path.write_text('{"type": "FeatureCollection", "features": [{"properties": {}}]}')
    with pytest.raises(WorkspaceError, match=r"points.geojson: unreadable \(KeyError") as error:
        project.points()
    assert error.value.status_code == 422


def test_a_project_json_that_is_not_utf8_is_a_404_and_the_others_stay_listed(store: Workspace) -> None:
    kept = store.create_project(NewProject(name="kept", image="plain.png"))
    broken = store.create_project(NewProject(name="broken", image="plain.png"))
    (broken.folder / "project.json").write_bytes(b'{"name": "\xff\xfe"}')
    with pytest.raises(WorkspaceError, match=r"project\.json is unreadable") as error:
        store.project(broken.id)
    assert error.value.status_code == 404
    assert [p.id for p in store.projects()] == [kept.id]


def test_a_point_of_a_class_removed_by_another_request_is_refused(store: Workspace) -> None:
    project = store.create_project(NewProject(name="p", image="plain.png"))
    project.set_classes(classes("water", "forest"))
    stale = store.project(project.id)  # loaded by a request before the other one changed the classes
    project.set_classes(classes("water"))
    with pytest.raises(WorkspaceError, match="'forest' is not a class of this project"):
        stale.add_point(click(3, 4, "forest"))
    assert project.points() == []


def test_symbolic_links_never_lead_outside_the_workspace(store: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(store.root / "plain.png", outside / "secret.png")
    (outside / "model.ckpt").write_bytes(b"not read")
    (store.root / "linked.png").symlink_to(outside / "secret.png")
    (store.root / "linked.ckpt").symlink_to(outside / "model.ckpt")
    (store.root / "inside.png").symlink_to(store.root / "plain.png")
    assert {image["path"] for image in store.images()} == {"maps/scene.tif", "plain.png", "inside.png"}
    assert "linked.ckpt" not in store.checkpoints()
    project = store.create_project(NewProject(name="p", image="plain.png"))
    record = json.loads((project.folder / "project.json").read_text())
    record["image"]["path"] = "../outside/secret.png"
    (project.folder / "project.json").write_text(json.dumps(record))
    with pytest.raises(WorkspaceError, match="outside") as error:
        _ = store.project(project.id).image_path
    assert error.value.status_code == 422


def test_a_state_folder_that_is_a_link_is_refused_at_startup(tmp_path: Path) -> None:
    root = write_workspace(tmp_path / "ws")
    (tmp_path / "elsewhere").mkdir()
    (root / ".pointseg").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PointsegError, match=r"\.pointseg is a symbolic link"):
        Workspace(root)
    with pytest.raises(PointsegError, match=r"--workspace .*\.pointseg is a symbolic link"):
        ServeSettings.checked(workspace=root)


def test_the_folder_walk_stops_at_its_cap(store: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b", "c"):
        (store.root / f"{name}.ckpt").write_bytes(b"x")
    monkeypatch.setattr("pointseg.serving.workspace.MAX_IMAGES_LISTED", 2)
    assert list(store.checkpoints()) == ["a.ckpt", "b.ckpt"]
    assert len(store._image_files()) == 2


def test_a_failed_or_killed_creation_leaves_no_project_folder(
    store: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (store.root / "plain.png").read_bytes()
    store.projects_folder.mkdir(parents=True)
    killed = store.projects_folder / ".0123456789ab.999999999-0123456789ab.staging"  # of a dead process
    killed.mkdir()
    (killed / "image.png").write_bytes(data)

    def disk_full(path: Path, data: object) -> None:
        raise OSError("no space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("pointseg.serving.workspace.write_json", disk_full)
        with pytest.raises(OSError, match="no space left"):
            store.create_upload_project("up", data, "PNG")
    assert list(store.projects_folder.iterdir()) == []
    project = store.create_upload_project("up", data, "PNG")
    assert [p.name for p in store.projects_folder.iterdir()] == [project.id]
    assert sorted(p.name for p in project.folder.iterdir()) == ["image.png", "project.json"]


def test_a_points_file_with_infinity_is_named_not_a_crash(store: Workspace) -> None:
    project = store.create_project(NewProject(name="p", image="plain.png"))
    properties = '{"id": "a", "class": "water", "row": Infinity, "col": 1}'
    project.points_path.write_text('{"features": [{"properties": ' + properties + "}]}")
    with pytest.raises(WorkspaceError, match=r"points\.geojson: unreadable \(OverflowError") as error:
        project.points()
    assert error.value.status_code == 422


def test_only_a_folder_named_exactly_as_an_id_is_a_project(store: Workspace) -> None:
    project = store.create_project(NewProject(name="p", image="plain.png"))
    look_alike = store.projects_folder / f"{project.id}\n"  # "$" of a plain match accepts the newline
    shutil.copytree(project.folder, look_alike)
    with pytest.raises(WorkspaceError, match="no project") as error:
        store.project(look_alike.name)
    assert error.value.status_code == 404
    assert [p.folder.name for p in store.projects()] == [project.id]
