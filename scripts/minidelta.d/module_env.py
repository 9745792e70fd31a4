"""The Python environments behind minidelta's modules (run by `scripts/minidelta up`).

On Delta, `module load pytorch-conda/2.8` (or `anaconda3_gpu`) puts the module's own Python first
on PATH: an interpreter with PyTorch that has never heard of the venv deltajobs was installed in
(NCSA Delta_doc software.rst, "Python"). minidelta rebuilds that trap, small and quick:

    python module_env.py --linked ENV_DIR ... --bare ENV_DIR ...

- `--linked DIR`: a Python installation (no pip) on the same base interpreter as the venv running
  this script, whose site-packages holds each entry of that venv's site-packages as a tree of hard
  links (copies where the venv is on another filesystem, or a file is not readable by all),
  except deltajobs, submitit, cloudpickle and typer (what a deltajobs job needs that a PyTorch
  module lacks), pip (a module's Python has none to install with) and the .pth files that put the
  repository on sys.path. torch, numpy and the rest come without copying gigabytes; console
  scripts (torchrun) are written for the env's own interpreter. Hard links, not symlinks: a
  symlink into the checkout's .venv works only for users who may enter the checkout, and a clone
  under a 0700 directory (`mktemp -d`, a 0700 home, root's) would hide torch from the login node's
  user (issue 33 item 14); a hard link is reached through /opt alone. Not a
  venv: a prefix of its own, as a conda env is (ensure_prefix), so that a venv made over it with
  `--system-site-packages` sees its packages, as a venv over Delta's conda modules does. Its
  share/jupyter is the venv's, mirrored the same way, as a conda env with JupyterLab has it:
  JupyterLab's pages (share/jupyter/lab) lie under the prefix that installed it, not in site-packages.
- `--bare DIR`: the same with the standard library only (Delta's plain `python` module).

Idempotent: an env whose base interpreter is unchanged is updated in place (entries added or
removed, ENTRIES_FILE remembers which source each came from), not rebuilt. Prints one line per env
for the script's log, and a line starting with WARNING where other users could not run the env's
Python (its base interpreter lies in a directory they may not enter). Standard library only.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import platform
import re
import shutil
import stat
import sys
import sysconfig
from pathlib import Path

# Distributions a module's Python must lack, as on Delta; pip: see the module docstring.
EXCLUDED = frozenset({"deltajobs", "submitit", "cloudpickle", "typer", "pip"})
MARK = "# Written by minidelta's module_env.py"
PREFIX_STAMP = "minidelta-env.cfg"  # the base Python an env was made from (ensure_prefix)
ENTRIES_FILE = ".minidelta-entries.json"  # in site-packages: entry -> the source it was linked from
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


def stamp(path: Path) -> list[int]:
    """What says that a source entry changed: its inode and modification time (pip replaces a
    package's directory; a new version is a new dist-info)."""
    info = path.lstat()
    return [info.st_ino, info.st_mtime_ns]


def link_or_copy(source: Path, dest: Path) -> None:
    """`dest` as a hard link to `source` where others may read it and both are on one filesystem,
    else a copy that everyone may read (and run, where its owner may)."""
    mode = source.stat().st_mode
    if mode & stat.S_IROTH:
        try:
            os.link(source, dest)
            return
        except OSError:
            pass  # another filesystem
    shutil.copyfile(source, dest)
    dest.chmod(0o755 if mode & stat.S_IXUSR else 0o644)


def mirror_entry(source: Path, dest: Path) -> None:
    """One site-packages entry (a package directory, a module, a dist-info) under `dest`, its
    directories 0755 whatever the source's modes, its files hard links or copies, symlinks kept."""
    if source.is_symlink():
        dest.symlink_to(source.readlink())
    elif source.is_dir():
        for root, dirs, files in os.walk(source):
            here = dest / Path(root).relative_to(source)
            here.mkdir(mode=0o755)
            here.chmod(0o755)
            for name in [*files, *(d for d in dirs if (Path(root) / d).is_symlink())]:
                item = Path(root) / name
                item_dest = here / name
                item_dest.symlink_to(item.readlink()) if item.is_symlink() else link_or_copy(item, item_dest)
    else:
        link_or_copy(source, dest)


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def sync_entries(site_packages: Path, source: Path, entries: list[str]) -> tuple[int, int]:
    """Make `site_packages` hold exactly `entries` of `source`, each mirrored (hard links): one
    whose source changed is mirrored again; symlinks (older minideltas) and entries mirrored before
    but no longer wanted are removed; files the env made itself are left. Returns (added, removed)."""
    record = site_packages / ENTRIES_FILE
    before: dict[str, list[int]] = json.loads(record.read_text()) if record.is_file() else {}
    want = {name: stamp(source / name) for name in entries}
    added = removed = 0
    for path in list(site_packages.iterdir()):
        ours = path.is_symlink() or path.name in before
        if ours and (path.is_symlink() or want.get(path.name) != before.get(path.name)):
            remove(path)
            removed += 1
    for name in want:
        dest = site_packages / name
        if dest.exists() or dest.is_symlink():
            if name in before and want[name] == before[name]:
                continue
            remove(dest)  # the env's own file in the way of a wanted entry
        mirror_entry(source / name, dest)
        added += 1
    record.write_text(json.dumps(want, sort_keys=True))
    return added, removed


def closed_to_others(path: Path) -> Path | None:
    """The first directory on the way to `path` that other users may not enter (no o+x), if any."""
    for directory in [*reversed(path.parents), path]:
        if directory.is_dir() and not directory.stat().st_mode & stat.S_IXOTH:
            return directory
    return None


def reach_warning(prefix: Path) -> str:
    """A WARNING line where other users (the login node's) could not run this env's Python: its base
    interpreter (the standard library, libpython) lies behind a directory they may not enter."""
    closed = closed_to_others(Path(sys.base_prefix))
    if closed is None:
        return ""
    return (
        f"\nWARNING: module env {prefix}: other users cannot enter {closed} "
        f"(mode {stat.S_IMODE(closed.stat().st_mode):o}), where its base Python {sys.base_prefix} lies: "
        f"`chmod o+x {closed}`, or make the checkout's .venv (scripts/install) with a Python outside it"
    )


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


SHARED = Path("share") / "jupyter"  # data files a linked env gets too (JupyterLab's pages, kernel specs)
SHARED_STAMP = Path("share") / ".minidelta-share.json"


def sync_shared(prefix: Path, source_prefix: Path) -> None:
    """PREFIX/share/jupyter as the source's, mirrored again when it changed (JupyterLab reinstalled)."""
    source, dest, record = source_prefix / SHARED, prefix / SHARED, prefix / SHARED_STAMP
    static = source / "lab" / "static"
    want = [*stamp(source), *(stamp(static) if static.is_dir() else [])] if source.is_dir() else None
    if dest.exists() and record.is_file() and json.loads(record.read_text()) == want:
        return
    if dest.exists() or dest.is_symlink():
        remove(dest)
    if want is None:
        record.unlink(missing_ok=True)
        return
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    mirror_entry(source, dest)
    record.write_text(json.dumps(want))


def build_linked(prefix: Path, source_prefix: Path) -> str:
    source = site_packages_of(source_prefix)
    made = ensure_prefix(prefix)
    entries = linked_entries(source) if source.is_dir() else []
    added, removed = sync_entries(site_packages_of(prefix), source, entries)
    sync_shared(prefix, source_prefix)
    write_scripts(prefix, console_scripts(source, entries))
    torch = next((m[1] for e in entries if (m := re.fullmatch(r"torch-(.+)\.dist-info", e))), None)
    what = f"torch {torch}" if torch else f"NO torch ({source} has none: `import torch` fails there)"
    return (
        f"module env {prefix}: {'made, ' if made else ''}{len(entries)} packages linked from {source} "
        f"(+{added} -{removed}), {what}, without {', '.join(sorted(EXCLUDED))}" + reach_warning(prefix)
    )


def build_bare(prefix: Path) -> str:
    made = ensure_prefix(prefix)
    state = "made" if made else "up to date"
    return f"module env {prefix}: {state}, Python {sys.version.split()[0]} alone" + reach_warning(prefix)


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
