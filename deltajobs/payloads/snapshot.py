"""A snapshot of the user's code at submit: queued jobs run the code as it was when submitted.

Where the script lies in a git repository, the snapshot holds the repository's files that git
would commit (tracked, plus untracked ones .gitignore does not exclude), as they are in the working
tree, uncommitted edits included; elsewhere it holds the script's directory without hidden
directories, virtualenvs and caches. Either way it must stay small: a snapshot that would exceed
`MAX_BYTES` or `MAX_FILES` is refused with the way out (`--no-snapshot`, or a .gitignore).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deltajobs.errors import SpecError

CODE_DIR = "code"  # in the run directory
MAX_BYTES = 200 * 1024 * 1024
MAX_FILES = 20_000
SKIPPED_DIRS = {"__pycache__", "node_modules", "venv", ".venv", "env", "wandb", "runs", "lightning_logs"}


@dataclass(frozen=True)
class Snapshot:
    root: Path  # the directory copied (a repository's top level, or the script's directory)
    files: list[Path]  # relative to root
    git: bool

    @property
    def size(self) -> int:
        return sum((self.root / f).stat().st_size for f in self.files)


def plan(script: Path) -> Snapshot:
    """What a snapshot of `script`'s code would copy (nothing is copied yet)."""
    script = script.absolute()
    root = git_root(script.parent)
    if root is not None:
        files = git_files(root)
        rel = script.relative_to(root)
        if rel not in files:
            files.append(rel)  # an ignored script still runs from the snapshot
        snapshot = Snapshot(root, files, git=True)
    else:
        snapshot = Snapshot(script.parent, walk(script.parent), git=False)
    if len(snapshot.files) > MAX_FILES or snapshot.size > MAX_BYTES:
        where = "the repository" if snapshot.git else f"{snapshot.root}"
        raise SpecError(
            "run.snapshot",
            f"{where} holds {len(snapshot.files)} files, {snapshot.size / 2**20:.0f} MiB: too much to copy per job "
            f"(at most {MAX_FILES} files, {MAX_BYTES // 2**20} MiB); add data to .gitignore, or pass --no-snapshot",
        )
    return snapshot


def take(snapshot: Snapshot, run_dir: Path) -> Path:
    """Copy the snapshot to RUN_DIR/code; returns that directory."""
    target = run_dir / CODE_DIR
    for rel in snapshot.files:
        source = snapshot.root / rel
        if not source.is_file():
            continue  # tracked but deleted in the working tree
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / rel)
    return target


def copy_run(code: Path, run_dir: Path) -> Path:
    """Copy an earlier run's snapshot (its RUN_DIR/code) whole to RUN_DIR/code, with that run's
    record of its git commit and changes (env/git.json, env/code.diff): the same code again."""
    target = run_dir / CODE_DIR
    shutil.copytree(code, target, symlinks=True)
    for name in ("git.json", "code.diff"):
        source = code.parent / "env" / name
        if source.is_file():
            (run_dir / "env").mkdir(exist_ok=True)
            shutil.copy2(source, run_dir / "env" / name)
    return target


def git_root(directory: Path) -> Path | None:
    if shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def git_files(root: Path) -> list[Path]:
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise SpecError("run.snapshot", f"git ls-files failed in {root}: {out.stderr.decode(errors='replace').strip()}")
    return [Path(name) for name in dict.fromkeys(out.stdout.decode().split("\0")) if name]


def walk(directory: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                files.append(path.relative_to(directory))
            if len(files) > MAX_FILES:
                return files
    return files
