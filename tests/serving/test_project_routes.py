"""The workspace API through FastAPI's TestClient: every route, its errors, training, restart."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from PIL import Image
from workspace_data import CLASSES, TINY, new_project, wait_for, write_workspace

from pointseg.checkpoint import load_trained_model
from pointseg.gis_outputs import read_class_names_tag
from pointseg.serving import project_routes
from pointseg.serving.app import build_app
from pointseg.serving.settings import ServeSettings

Cli = Callable[..., tuple[int, str, str]]


def client_for(root: Path, **settings: object) -> TestClient:
    return TestClient(build_app(ServeSettings.checked(workspace=root, **settings), training=TINY))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_workspace(tmp_path / "ws")


@pytest.fixture
def client(root: Path) -> Iterator[TestClient]:
    with client_for(root) as client:
        yield client


def png(response: object) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content)))  # type: ignore[attr-defined]


def test_a_workspace_server_without_a_model(client: TestClient) -> None:
    assert client.get("/ready").json() == {"status": "ready"}
    assert client.get("/health").json() == {"status": "ok"}
    for path in ("/", "/label"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for method, path in (("get", "/model"), ("post", "/predict"), ("post", "/preview")):
        answer = getattr(client, method)(path)
        assert answer.status_code == 404
        assert answer.json() == {"detail": "no model loaded: the server was started without --checkpoint"}


def test_a_model_server_without_a_workspace_says_so(checkpoint: Path, root: Path) -> None:
    with TestClient(build_app(ServeSettings.checked(checkpoint=checkpoint))) as client:
        for path in ("/label", "/api/images", "/api/projects", "/api/jobs/abc"):
            answer = client.get(path)
            assert answer.status_code == 404 and "without --workspace" in answer.json()["detail"]
        assert client.get("/model").status_code == 200
        assert client.head("/label").status_code == 404  # the predict page shows no link to /label
    with TestClient(build_app(ServeSettings.checked(checkpoint=checkpoint, workspace=root))) as both:
        assert both.head("/label").status_code == 200
        assert 'id="label-link" href="/label"' in both.get("/").text


def test_serve_without_a_checkpoint_or_a_workspace_is_one_error_line(cli: Cli) -> None:
    code, _, err = cli("serve")
    assert code == 1 and err.startswith("error: nothing to serve")


def test_images_and_class_sets(client: TestClient, root: Path, checkpoint: Path) -> None:
    shutil.copy(checkpoint, root / "maps" / "model.ckpt")
    images = client.get("/api/images").json()["images"]
    assert [image["path"] for image in images] == ["maps/scene.tif", "plain.png"]
    sets = {entry["source"]: entry["classes"] for entry in client.get("/api/class-sets").json()["class_sets"]}
    assert {"deepglobe", "landcoverai", "dubai", "checkpoint:maps/model.ckpt"} <= set(sets)
    assert sets["dubai"][0] == {"name": "building", "color": "#3C1098"}


def test_class_sets_read_each_checkpoint_once_per_version(
    client: TestClient, root: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(checkpoint, root / "maps" / "model.ckpt")
    reads: list[Path] = []
    original = project_routes.read_checkpoint

    def counted(path: Path) -> dict[str, Any]:
        reads.append(path)
        return original(path)

    monkeypatch.setattr(project_routes, "read_checkpoint", counted)
    project_routes.checkpoint_classes.cache_clear()
    first, second = (client.get("/api/class-sets").json() for _ in range(2))
    assert first == second and len(reads) == 1
    assert "checkpoint:maps/model.ckpt" in {entry["source"] for entry in first["class_sets"]}


def test_projects_are_created_listed_and_described(client: TestClient) -> None:
    project = new_project(client, clicks=False)
    described = client.get(f"/api/projects/{project}").json()
    assert described["name"] == "test" and described["classes"] == CLASSES
    assert described["image"]["width"] == 64 and described["image"]["crs"] == "EPSG:32633"
    assert described["points_per_class"] == {"water": 0, "forest": 0, "urban": 0}
    assert described["runs"] == [] and described["job"] is None
    assert [p["id"] for p in client.get("/api/projects").json()["projects"]] == [project]


def test_one_damaged_project_does_not_hide_the_others(client: TestClient, root: Path) -> None:
    good, damaged, unreadable = (new_project(client, clicks=False) for _ in range(3))
    folders = root / ".pointseg" / "projects"
    (folders / damaged / "points.geojson").write_text('{"features": [{"properties": {}}]}')
    (folders / unreadable / "project.json").write_bytes(b"\xff\xfe not utf-8")
    answer = client.get("/api/projects")
    assert answer.status_code == 200, answer.text
    listed = {p["id"]: p for p in answer.json()["projects"]}
    assert set(listed) == {good, damaged}
    assert "error" not in listed[good] and listed[good]["points_per_class"]["water"] == 0
    assert "points.geojson: unreadable" in listed[damaged]["error"] and listed[damaged]["name"] == "test"
    assert client.get(f"/api/projects/{unreadable}").status_code == 404


def test_project_creation_errors(client: TestClient, root: Path) -> None:
    cases = [
        ({"json": {"name": "x", "image": "../ws/plain.png"}}, 422, "not a raster of this workspace"),
        ({"json": {"name": "", "image": "plain.png"}}, 400, "name"),
        ({"json": {"image": "plain.png"}}, 400, "name: Field required"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "expected JSON"),
        ({"files": {"file": ("a.png", b"hello")}, "data": {"name": "up"}}, 415, "not a GeoTIFF, PNG or JPEG"),
        ({"files": {"file": ("a.png", (root / "plain.png").read_bytes())}}, 400, "'name' field"),
        ({"data": {"name": "up"}, "files": {"other": ("x", b"x")}}, 400, "no 'file' field"),
    ]
    for request, status, message in cases:
        answer = client.post("/api/projects", **request)  # type: ignore[arg-type]
        assert answer.status_code == status, (request, answer.text)
        assert message in answer.json()["detail"]
    assert client.get("/api/projects").json()["projects"] == []


def test_an_upload_makes_a_project_with_the_checks_of_predict(root: Path) -> None:
    data = (root / "plain.png").read_bytes()
    with client_for(root, max_pixels=1000) as small:
        too_big = small.post("/api/projects", data={"name": "up"}, files={"file": ("p.png", data)})
        assert too_big.status_code == 413 and "--max-pixels" in too_big.json()["detail"]
        truncated = small.post("/api/projects", data={"name": "up"}, files={"file": ("p.png", data[:200])})
        assert truncated.status_code == 422
    with client_for(root) as client:
        created = client.post("/api/projects", data={"name": "up"}, files={"file": ("../../evil.png", data)})
        assert created.status_code == 201, created.text
        assert created.json()["image"] == {
            "source": "upload",
            "path": "image.png",
            "width": 60,
            "height": 40,
            "bands": 3,
            "crs": None,
            "transform": None,
        }
    assert not (root.parent / "evil.png").exists()


def test_classes_and_points_routes(client: TestClient) -> None:
    project = new_project(client, clicks=False)
    base = f"/api/projects/{project}"
    added = client.post(f"{base}/points", json={"row": 5.5, "col": 7.25, "class": "Forest"})
    assert added.status_code == 201
    feature = added.json()
    point = feature["properties"]["id"]
    assert feature["properties"] == {"id": point, "class": "forest", "row": 5, "col": 7}
    moved = client.patch(f"{base}/points/{point}", json={"row": 6.1})
    assert moved.status_code == 200 and moved.json()["properties"]["row"] == 6
    collection = client.get(f"{base}/points").json()
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 1
    errors = [
        ("post", f"{base}/points", {"row": 64, "col": 1, "class": "water"}, 422, "outside the image"),
        ("post", f"{base}/points", {"row": 1, "col": 1, "class": "lava"}, 422, "not a class of this project"),
        ("post", f"{base}/points", {"row": "a", "col": 1, "class": "water"}, 400, "row"),
        ("post", f"{base}/points", {"row": 6, "col": 7, "class": "water"}, 409, f"already has point {point}"),
        ("patch", f"{base}/points/nope", {"row": 1}, 404, "no point 'nope'"),
        ("delete", f"{base}/points/nope", None, 404, "no point 'nope'"),
        ("put", f"{base}/classes", {"classes": [CLASSES[0]]}, 409, "forest (1 points) would be removed"),
        ("put", f"{base}/classes", {"classes": [{"name": "a", "color": "red"}]}, 400, "color"),
        ("put", f"{base}/classes", {"classes": [CLASSES[0], {**CLASSES[0], "name": "WATER"}]}, 422, "repeat"),
        ("get", "/api/projects/0123456789ab", None, 404, "no project '0123456789ab'"),
    ]
    for method, path, body, status, message in errors:
        answer = client.request(method.upper(), path, json=body)
        assert answer.status_code == status, (method, path, answer.text)
        assert message in answer.json()["detail"]
    assert client.delete(f"{base}/points/{point}").status_code == 204
    assert client.get(f"{base}/points").json()["features"] == []


def test_views_read_a_window_resampled_to_the_width_asked(client: TestClient) -> None:
    project = new_project(client, clicks=False)
    base = f"/api/projects/{project}"
    whole = client.get(f"{base}/view.png", params={"width": 32})
    assert whole.status_code == 200 and whole.headers["content-type"] == "image/png"
    assert png(whole).shape == (32, 32, 3)
    window = png(client.get(f"{base}/view.png", params={"x0": 8, "y0": 0, "x1": 24, "y1": 8, "width": 16}))
    assert window.shape == (8, 16, 3)
    full = png(client.get(f"{base}/view.png", params={"width": 64}))
    assert np.array_equal(window, full[0:8, 8:24])  # one stretch per image: a window matches the whole
    for params, status in (
        ({"x0": 10, "x1": 5}, 422),
        ({"width": 5000}, 400),
        ({"x1": 65}, 422),
        ({"y0": 64}, 422),
        ({"width": "wide"}, 400),
    ):
        answer = client.get(f"{base}/view.png", params=params)
        assert answer.status_code == status, (params, answer.text)
    for path in ("map.png", "confidence.png", "export/map.zip", "export/checkpoint.ckpt"):
        answer = client.get(f"{base}/{path}")
        assert answer.status_code == 404 and "no map yet" in answer.json()["detail"]


def test_training_needs_two_classes_with_two_points(client: TestClient) -> None:
    project = new_project(client, clicks=False)
    base = f"/api/projects/{project}"
    client.post(f"{base}/points", json={"row": 1, "col": 1, "class": "water"})
    client.post(f"{base}/points", json={"row": 2, "col": 1, "class": "water"})
    refused = client.post(f"{base}/train")
    assert refused.status_code == 422
    assert "points per class: water 2, forest 0, urban 0" in refused.json()["detail"]
    client.post(f"{base}/points", json={"row": 3, "col": 1, "class": "forest"})
    client.post(f"{base}/points", json={"row": 4, "col": 1, "class": "forest"})
    urban = client.post(f"{base}/points", json={"row": 5, "col": 1, "class": "urban"}).json()
    single = client.post(f"{base}/train", json={})
    assert single.status_code == 422 and "urban have a single point" in single.json()["detail"]
    client.delete(f"{base}/points/{urban['properties']['id']}")
    assert client.post(f"{base}/train", json={"epochs": 0}).status_code == 400
    warm = client.post(f"{base}/train", json={"warm_start": True})
    assert warm.status_code == 422 and "no finished run" in warm.json()["detail"]


@pytest.mark.integration
def test_train_look_correct_retrain_export_and_restart(root: Path, tmp_path: Path, cli: Cli) -> None:
    with client_for(root) as client:
        project = new_project(client)
        base = f"/api/projects/{project}"
        started = client.post(f"{base}/train")
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["state"] in ("queued", "running") and job["epochs"] == TINY.settings.epochs
        assert not job["warm_start"]
        second = client.post(f"{base}/train")
        assert second.status_code == 409 and job["id"] in second.json()["detail"]
        assert client.get(base).json()["job"]["id"] == job["id"]
        done = wait_for(client, job["id"])
        assert done["state"] == "done", done
        assert done["run"] == 1 and done["epoch"] == TINY.settings.epochs and done["loss"] is not None
        assert done["position"] is None and done["eta_s"] is None
        cancel_done = client.delete(f"/api/jobs/{job['id']}")
        assert cancel_done.status_code == 409

        described = client.get(base).json()
        assert described["job"] is None
        [run] = described["runs"]
        assert run["n"] == 1 and run["epochs"] == 2 and run["warm_start"] is False
        assert 0 < run["train_seconds"] <= run["seconds"]
        assert 0 <= run["val_point_accuracy"] <= 1

        overlay = client.get(f"{base}/map.png", params={"width": 64})
        assert overlay.status_code == 200
        shares = json.loads(overlay.headers["X-Pointseg-Shares"])
        assert set(shares) == {"water", "forest", "urban"} and sum(shares.values()) == pytest.approx(1)
        colors = {tuple(int(CLASSES[i]["color"][k : k + 2], 16) for k in (1, 3, 5)) for i in range(3)}
        assert {tuple(pixel[:3]) for pixel in png(overlay).reshape(-1, 4)} <= colors
        confidence = png(client.get(f"{base}/confidence.png", params={"width": 16}))
        assert confidence.shape == (16, 16, 4) and (confidence[..., :3] == 0).all()
        assert confidence[..., 3].max() <= 255 * 2 / 3 + 1  # confidence of 3 classes is at least 1/3

        client.post(f"{base}/points", json={"row": 60.5, "col": 60.5, "class": "urban"})
        retrain = client.post(f"{base}/train")
        assert retrain.status_code == 202 and retrain.json()["warm_start"] is True
        assert retrain.json()["epochs"] == TINY.warm_epochs
        assert wait_for(client, retrain.json()["id"])["run"] == 2
        assert [r["warm_start"] for r in client.get(base).json()["runs"]] == [False, True]

        points = client.get(f"{base}/export/points.geojson")
        assert points.headers["content-disposition"] == 'attachment; filename="points.geojson"'
        archive = zipfile.ZipFile(
            io.BytesIO(client.get(f"{base}/export/map.zip?run=1&polygons=true").content)
        )
        assert sorted(archive.namelist()) == [
            "scene_classes.gpkg",
            "scene_classes.qml",
            "scene_classes.tif",
            "scene_classes.tif.aux.xml",
        ]
        archive.extractall(tmp_path / "export")
        assert read_class_names_tag(tmp_path / "export" / "scene_classes.tif") == ["water", "forest", "urban"]
        with rasterio.open(tmp_path / "export" / "scene_classes.tif") as exported:
            assert exported.crs.to_string() == "EPSG:32633"
        model = tmp_path / "model.ckpt"
        model.write_bytes(client.get(f"{base}/export/checkpoint.ckpt").content)
        assert load_trained_model(model).schema.classes == ("water", "forest", "urban")
        assert client.get(f"{base}/map.png?run=3").status_code == 404

        (tmp_path / "points.geojson").write_bytes(points.content)
        code, _, err = cli(
            "predict", root / "maps" / "scene.tif", "--checkpoint", model, "--out", tmp_path / "predicted"
        )
        assert code == 0, err

    with client_for(root) as restarted:  # a new server over the same workspace
        again = restarted.get(base).json()
        assert [r["n"] for r in again["runs"]] == [1, 2] and again["job"] is None
        before = described["points_per_class"]
        assert again["points_per_class"] == {**before, "urban": before["urban"] + 1}
        assert restarted.get(f"{base}/points").json() == json.loads(points.content)
        assert restarted.get(f"/api/jobs/{job['id']}").status_code == 404
        assert restarted.get(f"{base}/map.png").status_code == 200
        assert not [
            p.name for p in (root / ".pointseg" / "projects" / project).iterdir() if p.name.startswith(".")
        ]

    with served_by_a_new_process(root) as url:  # `pointseg serve --workspace` in a process of its own
        again = httpx.get(f"{url}{base}", timeout=30).json()
        assert [r["n"] for r in again["runs"]] == [1, 2] and again["job"] is None
        assert httpx.get(f"{url}{base}/points", timeout=30).json() == json.loads(points.content)


@contextlib.contextmanager
def served_by_a_new_process(root: Path) -> Iterator[str]:
    """Run `pointseg serve --workspace ROOT` on a free port until the block ends; yield its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "pointseg", "serve", "--workspace", str(root), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # polls, a bound against a hang only: importing torch is slow on busy cores
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "the server exited before it was ready"
            time.sleep(0.2)
        else:
            pytest.fail("the server never answered /ready")
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.integration
def test_cancel_a_running_training_keeps_nothing(client: TestClient, root: Path) -> None:
    project = new_project(client)
    base = f"/api/projects/{project}"
    long = client.post(f"{base}/train", json={"epochs": 100}).json()
    other = new_project(client)
    queued = client.post(f"/api/projects/{other}/train").json()
    assert queued["position"] == 2 or client.get(f"/api/jobs/{queued['id']}").json()["position"] == 1
    cancelled_waiting = client.delete(f"/api/jobs/{queued['id']}")
    assert cancelled_waiting.status_code == 202 and cancelled_waiting.json()["state"] == "cancelled"
    while client.get(f"/api/jobs/{long['id']}").json()["epoch"] < 1:
        time.sleep(0.1)  # bounded by the job's own 100 epochs; it reports epochs as they end
    running = client.get(f"/api/jobs/{long['id']}").json()
    assert running["state"] == "running" and running["position"] == 0 and running["eta_s"] > 0
    assert client.delete(f"/api/jobs/{long['id']}").status_code == 202
    finished = wait_for(client, long["id"])
    assert finished["state"] == "cancelled" and finished["epoch"] < 100
    assert client.get(base).json()["runs"] == []
    assert sorted(p.name for p in (root / ".pointseg" / "projects" / project).iterdir()) == [
        "points.geojson",
        "project.json",
    ]


@pytest.mark.integration
def test_a_project_deleted_underneath_is_a_404_and_its_queued_training_fails(
    client: TestClient, root: Path
) -> None:
    project = new_project(client)
    shutil.rmtree(root / ".pointseg" / "projects" / project)
    for method, path in (
        ("GET", ""),
        ("GET", "/points"),
        ("POST", "/train"),
        ("GET", "/view.png"),
        ("GET", "/export/points.geojson"),
    ):
        answer = client.request(method, f"/api/projects/{project}{path}")
        assert answer.status_code == 404 and "no project" in answer.json()["detail"]
    blocker = new_project(client)
    long = client.post(f"/api/projects/{blocker}/train", json={"epochs": 100}).json()
    other = new_project(client)
    job = client.post(f"/api/projects/{other}/train").json()
    assert job["state"] == "queued"  # behind the long job, which runs 100 epochs
    shutil.rmtree(root / ".pointseg" / "projects" / other)
    assert client.delete(f"/api/jobs/{long['id']}").status_code == 202
    finished = wait_for(client, job["id"])
    assert finished["state"] == "failed" and f"no project '{other}'" in finished["message"]
    assert not (root / ".pointseg" / "projects" / other).exists()


def test_a_run_folder_damaged_by_hand_is_a_409_naming_it(client: TestClient, root: Path) -> None:
    project = new_project(client)
    runs = root / ".pointseg" / "projects" / project / "runs"
    (runs / "1").mkdir(parents=True)
    (runs / "1" / "report.json").write_text('{"maps": [], "checkpoint": "../../project.json"}')
    (runs / "1" / "run.json").write_text("{}")
    (runs / "2").mkdir()
    (runs / "2" / "report.json").write_text("{}")  # no run.json: an incomplete run is no run
    base = f"/api/projects/{project}"
    for path in ("/map.png?run=1", "/confidence.png", "/export/map.zip", "/export/checkpoint.ckpt"):
        answer = client.get(f"{base}{path}")
        assert answer.status_code == 409, (path, answer.text)
        assert "run 1" in answer.json()["detail"] and "damaged" in answer.json()["detail"]
    assert client.get(f"{base}/map.png?run=2").status_code == 404
    assert client.get(base).json()["runs"] == []  # the damaged run is left out of the summary
    warm = client.post(f"{base}/train", json={"warm_start": True})
    assert warm.status_code == 409 and "run 1" in warm.json()["detail"]


def test_the_routes_are_in_openapi_with_their_request_models(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/images",
        "/api/class-sets",
        "/api/projects",
        "/api/projects/{project_id}",
        "/api/projects/{project_id}/classes",
        "/api/projects/{project_id}/points",
        "/api/projects/{project_id}/points/{point_id}",
        "/api/projects/{project_id}/view.png",
        "/api/projects/{project_id}/map.png",
        "/api/projects/{project_id}/confidence.png",
        "/api/projects/{project_id}/train",
        "/api/jobs/{job_id}",
        "/api/projects/{project_id}/export/points.geojson",
        "/api/projects/{project_id}/export/map.zip",
        "/api/projects/{project_id}/export/checkpoint.ckpt",
    ):
        assert path in paths, path
    assert {"NewPoint", "PointChange", "ClassesUpdate", "TrainRequest"} <= set(
        schema["components"]["schemas"]
    )
    assert set(paths["/api/projects"]["post"]["requestBody"]["content"]) == {
        "application/json",
        "multipart/form-data",
    }
    assert "422" in paths["/api/projects/{project_id}/points"]["post"]["responses"]
    assert {"413", "415"} <= set(paths["/api/projects"]["post"]["responses"])
