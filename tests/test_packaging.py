"""Every third-party package the source imports is declared: a green CI on a machine where
something was installed by hand must not hide a missing dependency."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the dev extra installs tomli, tomllib's origin
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_level_modules() -> set[str]:
    modules = set()
    for path in (ROOT / "src" / "pointseg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"pointseg", "__future__"}


def test_every_imported_package_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        canonical(re.split(r"[<>=!~\[; ]", requirement)[0]) for requirement in project["dependencies"]
    }
    distributions = importlib.metadata.packages_distributions()
    undeclared = {
        module: distributions.get(module, ["(not installed)"])
        for module in imported_top_level_modules()
        if not any(canonical(name) in declared for name in distributions.get(module, []))
    }
    assert not undeclared, f"imported but not in [project.dependencies]: {undeclared}"


def test_the_console_script_and_module_entry_points_exist() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["pointseg"] == "pointseg.cli:main"
    assert (ROOT / "src" / "pointseg" / "__main__.py").is_file()
