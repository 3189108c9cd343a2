"""The serving package's imports: light for the command line, and no figures for the server."""

import subprocess
import sys


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(run.stdout.split())


def test_the_package_constants_import_nothing_more_than_pointseg() -> None:
    """The command line reads the serve defaults from it: no FastAPI, torch or rasterio for that."""
    assert imported_after("import pointseg.serving") - imported_after("import pointseg") == {
        "pointseg.serving"
    }


def test_the_app_imports_no_plotting() -> None:
    modules = imported_after("import pointseg.serving.app")
    assert "fastapi" in modules
    assert not {"pointseg.plots", "matplotlib"} & modules
