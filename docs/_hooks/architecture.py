"""MkDocs hook: the architecture page's table of layers, read from pyproject.toml at build time.

The import-linter contracts in pyproject.toml (`[tool.importlinter]`) are the truth about the
layers; the page holding the line `<!-- layers: pyproject.toml -->` gets a table of them (top layer
first), each package or root module with the first sentence of its docstring, so the page cannot
drift from the contracts that the test suite checks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the docs extra installs tomli
    import tomli as tomllib  # type: ignore[no-redef]

MARKER = "<!-- layers: pyproject.toml -->"


def _first_sentence(root: Path, package: str, name: str) -> str:
    for path in (root / package / name / "__init__.py", root / package / f"{name}.py"):
        if path.is_file():
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            text = " ".join(doc.split("\n\n")[0].split())
            return re.split(r"(?<=[.])\s", text, maxsplit=1)[0]
    return ""


def layers_table(root: Path) -> str:
    """The layers contract of `root`/pyproject.toml as a Markdown table."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config.get("tool", {}).get("importlinter", {}).get("contracts", [])
    layered = [contract for contract in contracts if contract.get("type") == "layers"]
    if not layered:
        return "*(pyproject.toml holds no layers contract yet.)*"
    lines = []
    for contract in layered:
        package = contract["containers"][0]
        lines += [f"*{contract['name']}* (`{package}`):", "", "| layer | package | what it is |", "|---|---|---|"]
        for number, layer in enumerate(contract["layers"], start=1):
            for name in (part.strip() for part in re.split(r"[|:]", layer)):
                about = _first_sentence(root, package, name).replace("|", r"\|")
                lines.append(f"| {number} | `{name}` | {about} |")
        lines.append("")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, layers_table(Path(config.config_file_path).parent))
