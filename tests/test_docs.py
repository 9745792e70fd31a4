"""The manual (README.md, docs/, mkdocs.yml): the site builds with `mkdocs build --strict`, its
command reference lists every command and option of the CLI, and every console block marked
`<!-- runs -->` runs, each `$` line exiting 0 and printing, loosely, what the page shows.

A marked block is a ```console fence right after the line `<!-- runs -->`: `$ ` starts a command,
`> ` (or a bare `>`) continues it (a here-document, as bash shows it), any other line is output the page shows. A
shown line matches an output line with runs of spaces equal and `...` standing for anything; shown
lines must appear in order, a line of just `...` stands for any lines. The commands of one block
run in one bash, in a scratch directory with its own DELTAJOBS_HOME and XDG_CONFIG_HOME, with the
test's interpreter's `deltajobs` and `python` first on PATH.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MKDOCS = BIN / "mkdocs"
MARKER = "<!-- runs -->"
STEP_END = "@@deltajobs-docs-step-exit"
PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


@dataclass
class Step:
    command: str
    shown: list[str] = field(default_factory=list)


@dataclass
class Block:
    page: str
    line: int
    steps: list[Step]


def marked_blocks(path: Path) -> list[Block]:
    """The console blocks of `path` marked to run; a marker before anything else is an error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    for number, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        where = f"{path.relative_to(REPO)}:{number + 1}"
        assert number + 1 < len(lines) and lines[number + 1].strip() == "```console", (
            f"{where}: {MARKER} must be followed by a ```console block"
        )
        steps: list[Step] = []
        for body in lines[number + 2 :]:
            if body.strip() == "```":
                break
            if body.startswith("$ "):
                steps.append(Step(body[2:]))
            elif (body.startswith("> ") or body == ">") and steps and not steps[-1].shown:
                steps[-1].command += "\n" + body[2:]  # a bare `>`: an empty line of a here-document
            else:
                assert steps, f"{where}: output before the first `$ ` command"
                steps[-1].shown.append(body)
        else:
            raise AssertionError(f"{where}: the ```console block is not closed")
        blocks.append(Block(str(path.relative_to(REPO)), number + 1, steps))
    return blocks


BLOCKS = [block for page in PAGES for block in marked_blocks(page)]


def _pattern(shown: str) -> re.Pattern[str]:
    parts = [r"\s+".join(re.escape(word) for word in piece.split()) for piece in shown.strip().split("...")]
    return re.compile(".*".join(parts))


def unmatched(shown: list[str], output: str) -> str | None:
    """The first shown line that the output lacks (in order), or None."""
    actual = output.splitlines()
    position = 0
    for line in shown:
        if not line.strip() or line.strip() == "...":
            continue
        pattern = _pattern(line)
        while position < len(actual) and not pattern.fullmatch(actual[position].strip()):
            position += 1
        if position == len(actual):
            return line
        position += 1
    return None


def scratch_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DELTAJOBS_")}
    env.update(
        DELTAJOBS_HOME=str(home / "state"),
        XDG_CONFIG_HOME=str(home / "config"),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        NO_COLOR="1",
        NO_MKDOCS_2_WARNING="1",
    )
    return env


def test_marked_blocks_exist() -> None:
    """The promise is not empty: the pages that show numbers mark their blocks to run."""
    pages = {block.page for block in BLOCKS}
    assert {"docs/index.md", "docs/charging.md", "docs/contract.md", "docs/exit-codes.md"} <= pages


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{block.page}:{block.line}" for block in BLOCKS])
def test_marked_block_runs(block: Block, tmp_path: Path) -> None:
    script = "".join(f"{step.command}\nprintf '\\n{STEP_END} %d\\n' $?\n" for step in block.steps)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=work,
        env=scratch_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    outputs = re.split(rf"\n?{STEP_END} (\d+)\n", proc.stdout)
    assert len(outputs) == 2 * len(block.steps) + 1, proc.stdout
    for index, step in enumerate(block.steps):
        output, code = outputs[2 * index], int(outputs[2 * index + 1])
        where = f"{block.page}:{block.line}: $ {step.command}"
        assert code == 0, f"{where}\nexited {code}:\n{output}"
        missing = unmatched(step.shown, output)
        assert missing is None, f"{where}\nthe page shows {missing!r}; the command printed:\n{output}"


def test_loose_matching_can_fail() -> None:
    output = "a\nworst case: 1.0 SU on x\nminimum: 1 SU"
    assert unmatched(["worst case: 1.0 SU on ...", "...", "minimum:  1 SU"], output) is None
    assert unmatched(["minimum: 1 SU", "worst case: 1.0 SU"], "worst case: 1.0 SU\nminimum: 1 SU") is not None
    assert unmatched(["worst case: 2.0 SU"], "worst case: 1.0 SU") is not None


# The site --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not MKDOCS.exists():
        pytest.skip(f"mkdocs is not installed in {BIN}: pip install -e '.[docs]' (scripts/test installs it)")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=REPO,
        env=scratch_env(tmp_path_factory.mktemp("home")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}{proc.stderr}"
    return out


def cli_commands() -> tuple[set[str], set[str]]:
    """Every visible command path of the CLI, and every option name, from click's command tree."""
    import typer.main

    from deltajobs.cli import app

    paths: set[str] = set()
    options: set[str] = set()

    def walk(command: Any, path: str, parent: Any) -> None:
        ctx = command.context_class(command, info_name=path.rsplit(" ", 1)[-1], parent=parent)
        paths.add(path)
        options.update(name for param in command.get_params(ctx) for name in param.opts if name.startswith("-"))
        for name in getattr(command, "list_commands", lambda _ctx: [])(ctx):
            sub = command.get_command(ctx, name)
            if not sub.hidden:
                walk(sub, f"{path} {name}", ctx)

    walk(typer.main.get_command(app), "deltajobs", None)
    return paths, options


def _headings(page: str) -> set[str]:
    found = re.findall(r"<h[1-6][^>]*>(.*?)</h[1-6]>", page, re.S)
    return {html.unescape(re.sub(r"<[^>]+>", "", text)).replace("¶", "").strip() for text in found}


def test_reference_lists_every_command_and_option(site: Path) -> None:
    page = (site / "reference" / "index.html").read_text(encoding="utf-8")
    paths, options = cli_commands()
    assert len(paths) > 20
    listed = {heading for heading in _headings(page) if heading.startswith("deltajobs")}
    assert paths - listed == set(), "commands missing from the reference"
    assert listed - paths == set(), "the reference lists commands the CLI lacks"
    text = html.unescape(page)
    assert {option for option in options if option not in text} == set(), "options missing from the reference"


def test_reference_is_generated_not_committed() -> None:
    assert not (REPO / "docs" / "reference.md").exists(), "docs/reference.md is generated at build time"


def test_root_files_are_in_the_site(site: Path) -> None:
    """RELIABILITY.md and BENCHMARKS.md stay at the root and appear whole in the site, links working."""
    for name, page in (("RELIABILITY.md", "reliability"), ("BENCHMARKS.md", "benchmarks")):
        built = _headings((site / page / "index.html").read_text(encoding="utf-8"))
        source = re.findall(r"^#{1,3} (.+)$", (REPO / name).read_text(encoding="utf-8"), re.M)
        fenced = re.compile(r"^\d+ rounds")  # a comment inside a code block, not a heading
        expected = {re.sub(r"[`*]", "", heading).strip() for heading in source if not fenced.match(heading)}
        assert expected - built == set(), f"{name}: headings missing from the site"
    assert (site / "search-bench.png").is_file() and (site / "double-descent.png").is_file()


def test_architecture_shows_the_layers_of_pyproject(site: Path) -> None:
    page = html.unescape((site / "architecture" / "index.html").read_text(encoding="utf-8"))
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    layers = re.search(r"^layers = \[(.*?)^\]", text, re.S | re.M)
    assert layers is not None
    for name in re.findall(r"[a-z_]+", layers.group(1)):
        assert f"<code>{name}</code>" in page, name
