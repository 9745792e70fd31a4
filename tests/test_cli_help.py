"""The first screen a newcomer reads: the real `deltajobs --help` (a subprocess at 80 columns) lists
every command exactly once, one line each, in panels by what users do, the everyday ones first; the
sub-apps' screens too; and a command's own --help keeps its detail, as prose.

The line budget of the first screen is 50: 23 entries (18 commands and 5 sub-apps) + 6 panels of 2
border lines each (35) + Typer's options panel (7, its completion options included) + the usage and
the four-line description with their blank lines (8). `gh --help` is about 40 for fewer entries,
without borders; a new command raises the budget by one, on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PANELS = ["Run jobs", "Watch them", "Cost in Service Units", "Sweeps and search", "Set up"]
GROUPS = ["sweep", "cluster", "remote", "registry", "data"]
MAX_LINES = 53  # 50, then rerun, show and diff (issue 37)


def help_text(*args: str, columns: int = 80, plain: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "DELTAJOBS_REMOTE")}
    env["COLUMNS"] = str(columns)
    if plain:
        env["NO_COLOR"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "deltajobs", *args, "--help"], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def panels(text: str) -> dict[str, list[str]]:
    """Each boxed panel's title and its inner lines, in order (`╭─ Title ───╮ ... ╰───╯`)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("╭─ "):
            current = found.setdefault(line.removeprefix("╭─ ").split(" ─")[0], [])
        elif line.startswith("╰"):
            current = None
        elif current is not None:
            current.append(line.strip("│").rstrip())
    return found


def entries(lines: list[str]) -> tuple[list[str], list[str]]:
    """The command names of a panel's lines, and the lines that continue a wrapped entry."""
    names = [line.split()[0] for line in lines if line.strip() and not line.startswith("  ")]
    wrapped = [line for line in lines if line.startswith("  ")]
    return names, wrapped


def registered() -> set[str]:
    import typer.main

    from deltajobs.cli import app

    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_the_first_screen_groups_every_command_once_everyday_first() -> None:
    text = help_text()
    found = panels(text)
    assert list(found) == ["Options", *PANELS]  # no "Commands" panel: every command has its place
    listed: list[str] = []
    for title in PANELS:
        names, wrapped = entries(found[title])
        assert names, f"panel {title!r} is empty"
        assert not wrapped, f"entries of {title!r} wrap at 80 columns: {wrapped}"
        listed += names
    assert listed[0] == "submit" and entries(found["Watch them"])[0][0] == "status"
    assert listed.index("sweep") > listed.index("charge")  # everyday first: run, watch, cost, then sweeps
    assert [name for name, n in Counter(listed).items() if n > 1] == []
    assert set(listed) == registered()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert len(text.splitlines()) <= MAX_LINES, text


def test_a_wide_terminal_shows_the_same_one_line_entries() -> None:
    narrow, wide = panels(help_text()), panels(help_text(columns=200))
    for title in PANELS:
        assert entries(wide[title]) == (entries(narrow[title])[0], [])


@pytest.mark.parametrize("group", GROUPS)
def test_each_sub_app_lists_its_commands_one_line_each(group: str) -> None:
    found = panels(help_text(group))
    names, wrapped = entries(found["Commands"])
    assert names and not wrapped, f"`deltajobs {group} --help` wraps: {wrapped}"


def test_plain_help_has_the_same_panels_in_the_same_order() -> None:
    """NO_COLOR turns Typer's rich help off; click's plain help gets one section per panel."""
    text = help_text(plain=True)
    titles = [line.removesuffix(":") for line in text.splitlines() if line.endswith(":") and not line[0].isspace()]
    assert titles == ["Options", *PANELS]
    listed = [line.split()[0] for line in text.split("Run jobs:")[1].splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(registered())


def test_a_commands_own_help_keeps_its_detail_as_prose() -> None:
    """The list shows the first paragraph; the command's --help all of it, each paragraph reflowed
    (a docstring's line breaks do not break the text mid-sentence)."""
    text = help_text("submit", columns=200)
    assert "Submit a job: a spec, a script, an sbatch script or a command." in text
    (detail,) = [line for line in text.splitlines() if "Validate, render and submit a job" in line]
    assert "(`submit train.sh`)" in detail and "prints its id, run directory and log." in detail
