"""rsync between the laptop and a remote's workdir, over the remote's control socket.

Up: the code a command names, as the submit snapshot sees it (deltajobs/payloads/snapshot.py): in
a git repository the files git would commit (tracked, plus untracked ones .gitignore does not
exclude), elsewhere the directory without hidden directories, virtualenvs and caches. They land in
a mirror that keeps the laptop's absolute path, WORKDIR/src/<path>, so that two projects never
collide and a path is rewritten by prefixing it. rsync's quick check (size and time) sends only
what changed. Down: a run directory's small files into a local mirror, and files a command wrote
for the laptop (--plot, --output).

Every rsync here passes `--protect-args` (file names with spaces or quotes reach the remote whole),
which rsync has taken since 3.0 (2008); the rsync macOS ships does not (2.6.9, and openrsync, "rsync
version 2.6.9 compatible", since macOS 15). `rsync_problem` asks the local rsync itself, at
`remote add` and `remote setup`, and says what to install.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from deltajobs.remote import ssh as seam
from deltajobs.remote.argv import real_path
from deltajobs.remote.records import workdir_rsync
from deltajobs.remote.ssh import Completed, RemoteError, Ssh, explain

SYNC_TIMEOUT_S = 1800
SMALL_FILE_MAX = "64M"  # a run's files above this stay on the remote unless --checkpoints
CHECKPOINT_PATTERNS = ["checkpoint.pt", "checkpoints/", "*.pt", "*.pth", "*.ckpt", "*.safetensors"]
LEFT_ON_REMOTE = ["code/"]  # the run's snapshot of the code: the laptop has it already
QUOTA = re.compile(r"Disk quota exceeded|No space left on device|EDQUOT|ENOSPC")


@dataclass(frozen=True)
class Tree:
    """Files to send: paths relative to `root`, a local directory."""

    root: Path
    files: list[Path]


@dataclass(frozen=True)
class Stats:
    files: int  # regular files considered
    sent: int  # regular files transferred (the ones that changed)
    bytes: int  # their size


def code_tree(path: Path) -> Tree:
    """What a named file (a script, a spec, an sbatch file) or a directory (the working directory of
    --command) brings along: its repository's files, or its directory's."""
    from deltajobs.payloads import snapshot

    path = real_path(path)
    directory = path if path.is_dir() else path.parent
    root = snapshot.git_root(directory)
    if root is not None:
        files = snapshot.git_files(root)
        if path.is_file() and path.relative_to(root) not in files:
            files.append(path.relative_to(root))  # an ignored script still travels
        tree = Tree(root, files)
    else:
        tree = Tree(directory, snapshot.walk(directory))
    size = sum((tree.root / f).stat().st_size for f in tree.files if (tree.root / f).is_file())
    if len(tree.files) > snapshot.MAX_FILES or size > snapshot.MAX_BYTES:
        raise RemoteError(
            f"{tree.root} holds {len(tree.files)} files, {size / 2**20:.0f} MiB: too much to send for a job "
            f"(at most {snapshot.MAX_FILES} files, {snapshot.MAX_BYTES // 2**20} MiB); add the data to .gitignore "
            "and keep it on the cluster (/projects, /work/hdd)"
        )
    return tree


def rsync_problem() -> str | None:
    """Why the local rsync cannot run deltajobs' transfers, in one line with what to install; None
    where it can (it takes `--protect-args`)."""
    try:
        if seam.run(["rsync", "--protect-args", "--version"], timeout=30).returncode == 0:
            return None
        version = seam.run(["rsync", "--version"], timeout=30).stdout
    except RemoteError as err:
        return str(err)  # not installed, or hung
    lines = version.strip().splitlines()
    first = " ".join(lines[0].split()) if lines else "an rsync that does not say its version"
    which = f"openrsync ({lines[1].strip()})" if first.startswith("openrsync") and len(lines) > 1 else first
    install = "`brew install rsync`, then open a new terminal" if sys.platform == "darwin" else "rsync with apt or dnf"
    return (
        f"the rsync here is {which}, which does not take --protect-args: deltajobs --remote needs rsync 3.0 or "
        f"later; install {install} (`rsync --version` should then say 3.x)"
    )


def require_rsync() -> None:
    """RemoteError with `rsync_problem`'s line, before anything is contacted."""
    problem = rsync_problem()
    if problem:
        raise RemoteError(problem)


def mirror_rsync(ssh: Ssh, local: Path) -> str:
    """Where a local directory is mirrored, as rsync's remote side names it (relative: the home)."""
    return f"{workdir_rsync(ssh.record)}/src{real_path(local)}"


def push(ssh: Ssh, tree: Tree) -> Stats:
    """Send `tree` to its mirror; only files whose size or time changed travel."""
    return push_to(ssh, tree, mirror_rsync(ssh, tree.root))


def push_to(ssh: Ssh, tree: Tree, dest: str) -> Stats:
    """Send `tree` into the remote directory `dest` (made if missing; relative: under the home)."""
    argv = [
        "rsync", "-a", "--protect-args", "--stats", "--from0", "--files-from=-",
        "-e", ssh.rsync_shell(), "--rsync-path", f"mkdir -p -- {shlex.quote(dest)} && rsync",
        f"{tree.root}/", f"{ssh.record.host}:{dest}/",
    ]  # fmt: skip
    listing = "\0".join(str(f) for f in tree.files if (tree.root / f).is_file())
    done = seam.run(argv, timeout=SYNC_TIMEOUT_S, input_text=listing)
    check(ssh, done, f"sending {tree.root} to {ssh.name}:{dest}")
    return parse_stats(done.stdout)


def pull_run(ssh: Ssh, run_dir: str, local: Path, *, checkpoints: bool) -> Stats:
    """Mirror a run directory's small files (results, metrics, plots, logs) into `local`; its
    checkpoints and big files too with `checkpoints`."""
    local.mkdir(parents=True, exist_ok=True)
    excludes = [*LEFT_ON_REMOTE] + ([] if checkpoints else [*CHECKPOINT_PATTERNS])
    argv = ["rsync", "-a", "--protect-args", "--stats", "-e", ssh.rsync_shell()]
    argv += [f"--exclude={pattern}" for pattern in excludes]
    if not checkpoints:
        argv += [f"--max-size={SMALL_FILE_MAX}"]
    argv += [f"{ssh.record.host}:{run_dir.rstrip('/')}/", f"{local}/"]
    done = seam.run(argv, timeout=SYNC_TIMEOUT_S)
    check(ssh, done, f"fetching {ssh.name}:{run_dir}")
    return parse_stats(done.stdout)


def fetch_file(ssh: Ssh, remote_path: str, local: Path) -> None:
    """Bring one file the remote command wrote (then removed there) to `local`."""
    local.absolute().parent.mkdir(parents=True, exist_ok=True)
    argv = ["rsync", "--protect-args", "--remove-source-files", "-e", ssh.rsync_shell()]
    argv += [f"{ssh.record.host}:{remote_path}", str(local)]
    check(ssh, seam.run(argv, timeout=SYNC_TIMEOUT_S), f"fetching {ssh.name}:{remote_path}")


def check(ssh: Ssh, done: Completed, doing: str) -> None:
    if done.returncode == 0:
        return
    if QUOTA.search(done.stderr):
        raise RemoteError(
            f"{ssh.name} has no room left: {doing} failed with '{QUOTA.search(done.stderr).group(0)}' "  # type: ignore[union-attr]
            f"(your quota there: `quota`; or `deltajobs remote add {ssh.name} --workdir` on a roomier filesystem)"
        )
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    # rsync's own summary ("rsync error: ... (code 12)") says less than the line before it
    # ("mkdir: cannot create directory ...: Permission denied", "rsync: [Receiver] ...")
    causes = [line for line in lines if not line.startswith("rsync error:") and "unexpectedly closed" not in line]
    if done.returncode == 255 or not causes and "connection unexpectedly closed" in done.stderr:
        raise RemoteError(f"{doing}: {explain(ssh, done.stderr)}")
    detail = causes[0] if causes else lines[-1] if lines else f"rsync exit code {done.returncode}"
    raise RemoteError(f"{doing} failed: {detail}")


def parse_stats(text: str) -> Stats:
    """rsync --stats: 'Number of files: 4 (reg: 3, dir: 1)', 'Number of regular files transferred: 1',
    'Total transferred file size: 1,234 bytes' (commas since rsync 3.1)."""

    def number(pattern: str) -> int:
        found = re.search(pattern, text)
        return int(found.group(1).replace(",", "")) if found else 0

    files = number(r"Number of files: [\d,]+ \(reg: ([\d,]+)") or number(r"Number of files: ([\d,]+)")
    sent = number(r"Number of regular files transferred: ([\d,]+)") or number(r"Number of files transferred: ([\d,]+)")
    return Stats(files=files, sent=sent, bytes=number(r"Total transferred file size: ([\d,]+)"))
