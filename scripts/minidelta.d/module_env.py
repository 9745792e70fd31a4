"""The Python environments behind minidelta's modules (run by `scripts/minidelta up`).

On Delta, `module load pytorch-conda/2.8` (or `anaconda3_gpu`) puts the module's own Python first
on PATH: an interpreter with PyTorch that has never heard of the venv deltajobs was installed in
(NCSA Delta_doc software.rst, "Python"). minidelta rebuilds that trap, small and quick:

    python module_env.py --linked ENV_DIR ... --bare ENV_DIR ...

- `--linked DIR`: a Python installation (no pip) on the same base interpreter as the venv running
  this script, whose site-packages holds a symlink to each entry of that venv's site-packages,
  except deltajobs, submitit, cloudpickle and typer (what a deltajobs job needs that a PyTorch
  module lacks), pip (a `pip install` there would write through the links into the source venv)
  and the .pth files that put the repository on sys.path. torch, numpy and the rest come without
  copying gigabytes; console scripts (torchrun) are written for the env's own interpreter. Not a
  venv: a prefix of its own, as a conda env is (ensure_prefix), so that a venv made over it with
  `--system-site-packages` sees its packages, as a venv over Delta's conda modules does.
- `--bare DIR`: the same with the standard library only (Delta's plain `python` module).

Idempotent: an env whose base interpreter is unchanged is updated in place (links added or
removed), not rebuilt. Prints one line per env for the script's log. Standard library only.
"""

from __future__ import annotations

import argparse
import configparser
import platform
import re
import shutil
import sys
import sysconfig
from pathlib import Path

# Distributions a module's Python must lack, as on Delta; pip: see the module docstring.
EXCLUDED = frozenset({"deltajobs", "submitit", "cloudpickle", "typer", "pip"})
MARK = "# Written by minidelta's module_env.py"
PREFIX_STAMP = "minidelta-env.cfg"  # the base Python an env was made from (ensure_prefix)
SCRIPT = """#!{python}
{mark}: the console script {name} of {dist}.
import sys
from {module} import {head}
if __name__ == "__main__":
    sys.exit({attr}())
"""


def dist_of(entry: str) -> str:
    """The distribution (or top-level module) a site-packages entry belongs to, normalised:
    `torch-2.14.1.dist-info` -> torch, `typing_extensions.py` -> typing_extensions."""
    name = re.sub(r"-[^-]*\.(dist|egg)-info$", "", entry)
    name = name.removesuffix(".py")
    return re.sub(r"[-_.]+", "_", name).lower()


def linked_entries(site_packages: Path) -> list[str]:
    """The entries of `site_packages` a linked env gets: all but EXCLUDED's and the .pth,
    .egg-link and __editable__ files (an editable install's way onto sys.path)."""
    keep = []
    for path in sorted(site_packages.iterdir()):
        name = path.name
        if name == "__pycache__" or name.endswith((".pth", ".egg-link")) or name.startswith("__editable__"):
            continue
        if dist_of(name) in EXCLUDED:
            continue
        keep.append(name)
    return keep


def console_scripts(site_packages: Path, entries: list[str]) -> dict[str, tuple[str, str]]:
    """name -> (distribution, "module:attr") of the console scripts of the linked distributions."""
    scripts: dict[str, tuple[str, str]] = {}
    for entry in entries:
        points = site_packages / entry / "entry_points.txt"
        if not entry.endswith(".dist-info") or not points.is_file():
            continue
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep names' case
        parser.read(points)
        if parser.has_section("console_scripts"):
            for name, target in parser.items("console_scripts"):
                scripts[name] = (dist_of(entry), target.split("[")[0].strip())
    return scripts


def site_packages_of(prefix: Path) -> Path:
    """The purelib folder of the env or venv at `prefix` (the same layout as this interpreter's)."""
    return Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))


def ensure_prefix(prefix: Path) -> bool:
    """A Python installation at `prefix`, as a conda env is (not a venv), on this interpreter's base
    Python; made if missing, a venv (older minideltas) or on another Python. Returns True if (re)made.

    bin/python3.X is a copy of the base interpreter (it finds libpython by its RUNPATH) and
    lib/python3.X links each entry of the base's standard library but site-packages, which is the
    env's own: Python takes `prefix` as its prefix (the stdlib landmark is there), so a venv made
    with `python3 -m venv --system-site-packages` over it sees the env's packages. Delta's PyTorch
    modules are conda installations (NCSA Delta_doc software.rst, "Python": anaconda3_gpu), which
    behave so; that users build their venvs that way there is a guess, not NCSA's words. A venv
    over a venv would see only the base Python's site-packages, not the module's torch.
    """
    base = Path(sys.base_prefix)
    stamp, want = prefix / PREFIX_STAMP, f"base = {base}\nversion = {platform.python_version()}\n"
    if stamp.is_file() and stamp.read_text() == want and (prefix / "bin" / "python").exists():
        return False
    if prefix.exists():
        shutil.rmtree(prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    bin_dir, stdlib = prefix / "bin", prefix / "lib" / version
    bin_dir.mkdir(parents=True)
    stdlib.mkdir(parents=True)
    shutil.copy2(Path(getattr(sys, "_base_executable", sys.executable)).resolve(), bin_dir / version)
    for name in ("python", f"python{sys.version_info.major}"):
        (bin_dir / name).symlink_to(version)
    for entry in sorted((base / "lib" / version).iterdir()):
        if entry.name != "site-packages":
            (stdlib / entry.name).symlink_to(entry)
    (stdlib / "site-packages").mkdir()
    stamp.write_text(want)
    return True


def sync_links(site_packages: Path, source: Path, entries: list[str]) -> tuple[int, int]:
    """Make `site_packages` hold exactly one symlink per entry of `source` (other symlinks there
    are removed; files the venv made itself are left). Returns (added, removed)."""
    added = removed = 0
    want = {name: source / name for name in entries}
    for path in list(site_packages.iterdir()):
        if path.is_symlink() and Path(path.readlink()) != want.get(path.name):
            path.unlink()
            removed += 1
    for name, target in want.items():
        link = site_packages / name
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link) if link.is_dir() else link.unlink()
            link.symlink_to(target)
            added += 1
    return added, removed


def write_scripts(prefix: Path, scripts: dict[str, tuple[str, str]]) -> None:
    """bin/NAME for each console script, run by the env's interpreter; scripts written earlier for
    distributions no longer linked are removed, unchanged ones left alone."""
    bin_dir = prefix / "bin"
    for path in bin_dir.iterdir():
        if path.name not in scripts and path.is_file() and not path.is_symlink() and MARK.encode() in path.read_bytes():
            path.unlink()
    for name, (dist, target) in scripts.items():
        module, _, attr = target.partition(":")
        path = bin_dir / name
        if path.is_symlink() or not attr:
            continue  # python, python3: the env's own
        python = bin_dir / "python"
        text = SCRIPT.format(
            python=python, mark=MARK, name=name, dist=dist, module=module, head=attr.split(".")[0], attr=attr
        )
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            path.chmod(0o755)


def build_linked(prefix: Path, source_prefix: Path) -> str:
    source = site_packages_of(source_prefix)
    made = ensure_prefix(prefix)
    entries = linked_entries(source) if source.is_dir() else []
    added, removed = sync_links(site_packages_of(prefix), source, entries)
    write_scripts(prefix, console_scripts(source, entries))
    torch = next((m[1] for e in entries if (m := re.fullmatch(r"torch-(.+)\.dist-info", e))), None)
    what = f"torch {torch}" if torch else f"NO torch ({source} has none: `import torch` fails there)"
    return (
        f"module env {prefix}: {'made, ' if made else ''}{len(entries)} packages linked from {source} "
        f"(+{added} -{removed}), {what}, without {', '.join(sorted(EXCLUDED))}"
    )


def build_bare(prefix: Path) -> str:
    made = ensure_prefix(prefix)
    return f"module env {prefix}: {'made' if made else 'up to date'}, Python {sys.version.split()[0]} alone"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--linked", action="append", default=[], type=Path, metavar="DIR", help="env with torch")
    parser.add_argument("--bare", action="append", default=[], type=Path, metavar="DIR", help="env, stdlib only")
    parser.add_argument("--source", type=Path, default=Path(sys.prefix), help="venv to link (default: this one)")
    args = parser.parse_args(argv)
    for prefix in args.linked:
        print(build_linked(prefix, args.source))
    for prefix in args.bare:
        print(build_bare(prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
