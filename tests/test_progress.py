import io

from rich.console import Console

from pointseg.progress import clock, track_items


def test_clock() -> None:
    assert (clock(0), clock(75.2), clock(3725)) == ("0:00", "1:15", "1:02:05")


def test_plain_lines_when_the_output_is_not_a_terminal() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=False, width=200)
    with track_items(console, "evaluating", 3) as advance:
        for name in ("a", "b", "c"):
            advance(name)
    lines = output.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "evaluating: 1/3 images (a)",
        "evaluating: 2/3 images (b)",
        "evaluating: 3/3 images (c)",
    ]
    assert all("elapsed" in line and "left" in line for line in lines)
    assert lines[-1].endswith("about 0:00 left")


def test_plain_lines_every_tenth_and_at_the_end() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=False, width=200)
    with track_items(console, "doing", 25, "things") as advance:
        for index in range(25):
            advance(str(index + 1))
    counts = [line.split(" (")[0] for line in output.getvalue().splitlines()]
    assert counts == [f"doing: {n}/25 things" for n in (3, 6, 9, 12, 15, 18, 21, 24, 25)]


def test_a_bar_on_a_terminal_leaves_nothing_behind() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=100)
    with track_items(console, "plotting", 2) as advance:
        advance("a")
        advance("b")
    assert "plotting: 1/2" not in output.getvalue()


def test_a_bar_on_a_terminal_shows_the_count() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=100)
    with track_items(console, "doing", 4, "things") as advance:
        for index in range(4):
            advance(str(index))
    assert "doing" in output.getvalue() and "4/4" in output.getvalue()
