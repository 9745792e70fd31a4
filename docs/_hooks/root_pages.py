"""MkDocs hook: pages that include a file kept at the repository's root.

RELIABILITY.md and BENCHMARKS.md stay at the root (CI, the tests and other tools read them there).
A page holding the line `<!-- include: RELIABILITY.md -->` gets that file's text in its place at
build time, with its links rewritten for the site: `docs/x.png` becomes `x.png` (the page lives in
docs/), and a link to another included root file goes to the page that includes it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

INCLUDE = re.compile(r"^<!-- include: (?P<name>[\w.-]+) -->$", re.MULTILINE)
ROOT_PAGES = {"RELIABILITY.md": "reliability.md", "BENCHMARKS.md": "benchmarks.md"}
_LINK = re.compile(r"(\]\()(?P<target>[^)\s]+)")


def _rewrite(target: str) -> str:
    if target.startswith("docs/"):
        return target.removeprefix("docs/")
    path, _, anchor = target.partition("#")
    if path in ROOT_PAGES:
        return ROOT_PAGES[path] + (f"#{anchor}" if anchor else "")
    return target


def included(markdown: str, root: Path) -> str:
    """`markdown` with every include line replaced by the root file's text, its links rewritten."""

    def replace(match: re.Match[str]) -> str:
        text = (root / match.group("name")).read_text(encoding="utf-8")
        return _LINK.sub(lambda link: link.group(1) + _rewrite(link.group("target")), text)

    return INCLUDE.sub(replace, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return included(markdown, Path(config.config_file_path).parent)
