"""MkDocs hook: the command reference (`reference.md`), generated from the CLI at every build.

It walks the click command tree that Typer builds from `deltajobs.cli.app` and writes, for every
command and subcommand, its usage, its help and a table of its arguments and options (grouped by
their help panel where a command sets one). Nothing is committed: the page cannot drift from the
CLI. `python docs/_hooks/cli_reference.py` prints the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

PAGE = "reference.md"

# Rich markup that Typer renders in --help ("[bold]x[/bold]"); the page shows the plain text.
_RICH_TAG = re.compile(r"\[/?(?:bold|italic|underline|dim|red|green|yellow|blue|magenta|cyan|white|b|i|u)\]")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def command_tree() -> Any:
    """The click command that Typer builds for the `deltajobs` app."""
    import typer.main

    from deltajobs.cli import app

    return typer.main.get_command(app)


def walk(command: Any, path: tuple[str, ...] = ("deltajobs",), parent: Any = None) -> Iterator[tuple[Any, Any]]:
    """Every visible command under `command`, depth first, with a click context naming its path."""
    ctx = command.context_class(command, info_name=path[-1], parent=parent)
    yield command, ctx
    if hasattr(command, "list_commands"):  # a group (Typer ships its own click, so no isinstance)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, (*path, name), ctx)


def _text(raw: str) -> str:
    """Help text as Markdown: rich tags gone, `<`, `>` and `*` escaped outside code spans."""
    raw = _RICH_TAG.sub("", raw.replace("\b", ""))
    out, last = [], 0
    for match in _CODE_SPAN.finditer(raw):
        out.append(_escape(raw[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_escape(raw[last:]))
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*")


def _paragraphs(help_text: str) -> str:
    blocks = [" ".join(line.strip() for line in block.splitlines()) for block in re.split(r"\n\s*\n", help_text)]
    return "\n\n".join(_text(block) for block in blocks if block.strip())


def _panel(obj: Any, default: str) -> str:
    panel = getattr(obj, "rich_help_panel", None)
    return panel if isinstance(panel, str) and panel else default


def _summary(command: Any) -> str:
    text = command.short_help or (command.help or "").split("\n\n")[0]
    text = " ".join(text.split())
    depth = 0
    for index, char in enumerate(text):  # the first sentence, not cut inside parentheses
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and char in ".;:" and text[index + 1 : index + 2] in (" ", ""):
            return _text(text[:index])
    return _text(text)


def _anchor(ctx: Any) -> str:
    return ctx.command_path.replace(" ", "-")


def _params(command: Any, ctx: Any) -> list[str]:
    groups: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        default = "Arguments" if param.param_type_name == "argument" else "Options"
        groups.setdefault(_panel(param, default), []).append((names, help_text))
    lines: list[str] = []
    for panel, rows in groups.items():
        lines += [f"**{panel}**", "", "| | |", "|---|---|"]
        for names, help_text in rows:
            cell = _text(" ".join(help_text.split())).replace("|", r"\|")
            lines.append(f"| `{names}` | {cell} |")
        lines.append("")
    return lines


def reference_markdown(root: Any = None) -> str:
    """The whole reference page, from the live command tree."""
    root = command_tree() if root is None else root
    commands = list(walk(root))
    lines = [
        "# Command reference",
        "",
        "<!-- Generated at build time from the CLI (docs/_hooks/cli_reference.py): do not edit. -->",
        "Generated from the CLI itself at every build of this site, so it cannot drift from",
        "`deltajobs --help`. Every command also takes `--remote NAME` / `--no-remote`",
        "([From your laptop](remote.md)); exit codes are on [their own page](exit-codes.md).",
        "",
    ]
    top = [(cmd, ctx) for cmd, ctx in commands if ctx.parent is not None and ctx.parent.parent is None]
    panels: dict[str, list[tuple[Any, Any]]] = {}
    for cmd, ctx in top:
        panels.setdefault(_panel(cmd, "Commands"), []).append((cmd, ctx))
    for panel, members in panels.items():
        lines += [f"**{panel}**", "", "| command | what it does |", "|---|---|"]
        for cmd, ctx in members:
            lines.append(f"| [`{ctx.command_path}`](#{_anchor(ctx)}) | {_summary(cmd)} |")
        lines.append("")
    for cmd, ctx in commands:
        level = "#" * max(2, ctx.command_path.count(" ") + 1)
        lines += [f"{level} {ctx.command_path} {{#{_anchor(ctx)}}}", "", "```text", cmd.get_usage(ctx), "```", ""]
        if cmd.help:
            lines += [_paragraphs(cmd.help), ""]
        if hasattr(cmd, "list_commands"):
            subs = [cmd.get_command(ctx, name) for name in cmd.list_commands(ctx)]
            listed = [f"`{name.name}`" for name in subs if name is not None and not name.hidden]
            lines += [f"Commands: {', '.join(listed)}.", ""]
        lines += _params(cmd, ctx)
    return "\n".join(lines).rstrip() + "\n"


def on_files(files: Any, config: Any) -> Any:
    """Add the generated page to the site's files (MkDocs >= 1.6: File.generated)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=reference_markdown()))
    return files


if __name__ == "__main__":
    print(reference_markdown(), end="")
