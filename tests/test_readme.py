"""The README and the experiment log are part of the product: the README's commands must be the ones
CI runs, every table row either quotes must appear, verbatim, in a file that a named command
regenerates, and every link between them must lead somewhere."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXPERIMENT_LOG_PATH = ROOT / "docs" / "experiments" / "README.md"
EXPERIMENT_LOG = EXPERIMENT_LOG_PATH.read_text()


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S)


def section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def test_ci_runs_the_readmes_test_command() -> None:
    setup, tests = code_blocks(section(README, "Install and run: two commands"))[:2]
    assert "pytest" in tests and "-c constraints.txt" in tests
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests.strip() in ci_lines, "the README's test command and .ci/run differ"
    assert "-c constraints.txt" in setup


def test_the_run_command_needs_nothing_beside_the_project() -> None:
    setup = code_blocks(section(README, "Install and run: two commands"))[0]
    assert "pointseg map examples/dubai/images --points examples/dubai/points" in setup
    assert "../shared" not in setup
    images = sorted((ROOT / "examples" / "dubai" / "images").iterdir())
    assert images and all(
        (ROOT / "examples" / "dubai" / "points" / f"{p.stem}.geojson").is_file() for p in images
    )
    sample_bytes = sum(p.stat().st_size for p in (ROOT / "examples").rglob("*") if p.is_file())
    assert sample_bytes <= 5 * 2**20, f"the bundled sample is {sample_bytes} bytes; at most 5 MB"


def test_every_config_and_path_the_readme_names_exists() -> None:
    for config in set(re.findall(r"configs/[\w.]+\.yaml", README + EXPERIMENT_LOG)):
        assert (ROOT / config).is_file(), config
    for pattern in re.findall(r"configs/([\w]+)_\{([\d,]+)\}(\w+)\.yaml", README):
        prefix, numbers, suffix = pattern
        for number in numbers.split(","):
            assert (ROOT / f"configs/{prefix}_{number}{suffix}.yaml").is_file()
    for path in (
        "constraints.txt",
        "Dockerfile",
        "benchmarks/README.md",
        "src/pointseg/torchvision_compat.py",
    ):
        assert (ROOT / path).is_file(), path


def quoted_rows_missing_from_sources(text: str, folder: Path) -> list[str]:
    """Table rows of ``text`` (header rows aside) that none of the results files it links contains."""
    sources = re.findall(r"\(([\w/.-]+/(?:results|ablation)\.md)\)", text)
    assert sources, "the text names the results.md files it quotes"
    quoted = {
        line
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith(("| regime", "| step"))
    }
    assert quoted, "the text quotes table rows"
    generated: set[str] = set()
    for source in sources:
        generated |= set((folder / source).read_text().splitlines())
    return sorted(quoted - generated)


def test_quoted_results_come_from_regenerated_files() -> None:
    results = section(README, "Results: mIoU against label density")
    assert quoted_rows_missing_from_sources(results, ROOT) == []


def test_the_experiment_logs_results_come_from_regenerated_files() -> None:
    assert quoted_rows_missing_from_sources(EXPERIMENT_LOG, EXPERIMENT_LOG_PATH.parent) == []


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text (lower case, punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_every_relative_link_leads_to_a_file_and_heading() -> None:
    for document in (ROOT / "README.md", EXPERIMENT_LOG_PATH):
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            assert linked.exists(), f"{document.name}: {target} leads nowhere"
            if anchor:
                anchors = heading_anchors(linked.read_text())
                assert anchor in anchors, f"{document.name}: no heading for {target}"
