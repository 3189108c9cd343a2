import io

from rich.console import Console

from pointseg.progress import item_progress


def test_plain_lines_every_tenth_and_at_the_end() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=False, width=200)
    with item_progress(console, "doing", 25, "things") as advance:
        for _ in range(25):
            advance()
    counts = [line.split(",")[0] for line in output.getvalue().splitlines()]
    assert counts == [f"doing: {n}/25 things" for n in (3, 6, 9, 12, 15, 18, 21, 24, 25)]


def test_a_bar_on_a_terminal() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=100)
    with item_progress(console, "doing", 4, "things") as advance:
        for _ in range(4):
            advance()
    assert "doing" in output.getvalue() and "4/4" in output.getvalue()
