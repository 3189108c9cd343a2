import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from pointseg import torchvision_compat


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this environment."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


ROOT = Path(__file__).resolve().parents[1]
NEEDS_TORCHVISION = ("segmentation_models_pytorch", "timm", "torchmetrics", "torchvision", "lightning")


def test_torchvision_and_smp_import_after_the_shim() -> None:
    # pointseg.metrics applies the shim itself (it imports torchmetrics, which imports torchvision)
    result = run_python("import pointseg.metrics, torchvision, segmentation_models_pytorch, pointseg.models")
    assert result.returncode == 0, result.stderr


def top_level_imports(path: Path) -> list[str]:
    """The modules that ``path`` imports at module level, in order."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_every_module_that_imports_torchvision_users_applies_the_shim_first() -> None:
    checked = []
    for path in sorted([*(ROOT / "src" / "pointseg").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        imports = top_level_imports(path)
        users = [i for i, name in enumerate(imports) if name.split(".")[0] in NEEDS_TORCHVISION]
        if users:
            checked.append(path.name)
            assert "pointseg.torchvision_compat" in imports[: users[0]], f"{path}: import the shim first"
    assert {"models.py", "metrics.py", "training.py"} <= set(checked)


def test_importing_pointseg_imports_no_torch() -> None:
    result = run_python("import sys, pointseg; print('torch' in sys.modules)")
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr


def test_torchvision_alone_fails_where_the_shim_is_needed() -> None:
    result = run_python("import torchvision")
    if result.returncode == 0:
        assert not torchvision_compat.torchvision_needs_shim()
        pytest.skip("torchvision imports cleanly here: this environment does not need the shim")
    assert "torchvision::nms does not exist" in result.stderr
    assert torchvision_compat.torchvision_needs_shim()


class RecordingLibrary:
    """Stands in for ``torch.library.Library`` and records what would be defined."""

    created: ClassVar[list["RecordingLibrary"]] = []

    def __init__(self, namespace: str, kind: str) -> None:
        self.namespace, self.kind, self.schemas = namespace, kind, []
        RecordingLibrary.created.append(self)

    def define(self, schema: str) -> None:
        self.schemas.append(schema)


@pytest.fixture
def fresh_state(monkeypatch):
    """No shim registered yet, torchvision not imported, and torch.library.Library recorded."""
    RecordingLibrary.created = []
    monkeypatch.setattr(torchvision_compat, "_shim_library", None)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(torchvision_compat.torch.library, "Library", RecordingLibrary)
    return monkeypatch


def test_registers_the_missing_schemas_once_when_needed(fresh_state) -> None:
    fresh_state.setattr(torchvision_compat, "torchvision_needs_shim", lambda: True)
    assert torchvision_compat.ensure_torchvision_importable() is True
    [library] = RecordingLibrary.created
    assert (library.namespace, library.kind) == ("torchvision", "DEF")
    assert [s.split("(")[0] for s in library.schemas] == ["nms", "qnms"]
    assert torchvision_compat.ensure_torchvision_importable() is False  # already patched
    assert len(RecordingLibrary.created) == 1


def test_no_op_when_the_extension_loads(fresh_state) -> None:
    fresh_state.setattr(torchvision_compat, "torchvision_needs_shim", lambda: False)
    assert torchvision_compat.ensure_torchvision_importable() is False
    assert RecordingLibrary.created == []
    assert torchvision_compat._shim_library is None


def test_no_op_when_torchvision_is_already_imported(fresh_state) -> None:
    def must_not_be_asked() -> bool:
        raise AssertionError("torchvision is imported already; nothing to check")

    fresh_state.setattr(torchvision_compat, "torchvision_needs_shim", must_not_be_asked)
    fresh_state.setitem(sys.modules, "torchvision", object())
    assert torchvision_compat.ensure_torchvision_importable() is False
    assert RecordingLibrary.created == []


def test_no_op_when_torchvision_is_not_installed(fresh_state) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name == "torchvision" else real_find_spec(name, *args, **kwargs)

    fresh_state.setattr(importlib.util, "find_spec", find_spec)
    assert torchvision_compat.torchvision_needs_shim() is False
    assert torchvision_compat.ensure_torchvision_importable() is False
    assert RecordingLibrary.created == []
