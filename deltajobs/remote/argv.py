"""What a command line asks of the laptop before and after the remote runs it (pure functions).

`split_remote` takes `--remote NAME` (or `--remote=NAME`, `--no-remote`) out of the arguments
before `--`, wherever it stands. `plan` then reads the rest, the arguments the remote's deltajobs
gets: the local files that a job command names (a script, a spec, an sbatch file: any argument
that is a file here) are sent and their paths rewritten to the mirror; the files a command writes
for the user (`--plot FILE`, `--output FILE`) are written in the remote's tmp/ and fetched to FILE;
`results --checkpoints` is the laptop's own flag.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

# Commands whose job arguments name the user's files; `--command` runs in the working directory.
SENDING = {"submit", "render", "estimate", "check", "doctor", "shell"}  # and `sweep [run] JOB`
# Run in the mirror of the laptop's directory (WORKDIR/src/<path>), sending nothing: a notebook opens
# the code as last sent. A later `submit` sends the laptop's files again: one that a notebook
# changed there and the laptop has too is replaced by the laptop's (docs/notebooks.md says so).
IN_MIRROR = {"notebook"}
DIR_OPTIONS = {"--dir"}  # an IN_MIRROR command's directory option: the mirror of a local directory
GROUPS = {
    "sweep": {"run", "resume", "status", "results", "cancel"},
    "cluster": {"discover", "list", "show"},
    "registry": {"rebuild"},
    "data": {"fetch"},
}
LOCAL_ONLY = {"remote"}  # commands that manage the remotes themselves
FETCHED = {"--plot", "--output", "-o"}  # FILE options whose file the user wants here
READ_ONLY = {
    "status",
    "logs",
    "results",
    "show",
    "diff",
    "render",
    "estimate",
    "check",
    "list",
    "accounts",
    "charge",
    "doctor",
}


@dataclass(frozen=True)
class Mirror:
    """A local path, sent to the remote: there WORKDIR/src/<its absolute path>."""

    local: Path


@dataclass(frozen=True)
class Scratch:
    """A file the remote command writes in WORKDIR/tmp/ for the laptop to fetch to `local`."""

    name: str
    local: Path


Arg = str | Mirror | Scratch


@dataclass
class Plan:
    words: tuple[str, ...]  # the command: ("submit",), ("sweep", "results")
    args: list[Arg]  # the remote deltajobs' arguments
    sends: list[Path] = field(default_factory=list)  # named files (their trees travel)
    sends_cwd: bool = False  # --command: the working directory travels
    checkpoints: bool = False

    @property
    def sending(self) -> bool:
        if self.words[0] == "sweep":
            return self.words[1:] in ((), ("run",))
        return self.words[0] in SENDING

    @property
    def in_mirror(self) -> bool:
        """The remote command runs in the mirror of the laptop's working directory."""
        return self.sending or self.words[0] in IN_MIRROR

    @property
    def scratch(self) -> list[Scratch]:
        return [a for a in self.args if isinstance(a, Scratch)]

    @property
    def read_only(self) -> bool:
        return self.words[0] in READ_ONLY or self.words in {("sweep", "status"), ("sweep", "results")}


def split_remote(argv: list[str]) -> tuple[str | None, bool, list[str]]:
    """(the --remote NAME given, whether --no-remote was, the other arguments)."""
    name: str | None = None
    no_remote = False
    rest: list[str] = []
    tokens = iter(enumerate(argv))
    for index, token in tokens:
        if token == "--":
            rest += argv[index:]
            break
        if token == "--remote":
            _, name = next(tokens, (0, ""))
        elif token.startswith("--remote="):
            name = token.split("=", 1)[1]
        elif token == "--no-remote":
            no_remote = True
        else:
            rest.append(token)
    return name, no_remote, rest


def command_words(args: list[str]) -> tuple[str, ...]:
    if not args or args[0].startswith("-"):
        return ()
    subs = GROUPS.get(args[0])
    if subs and len(args) > 1 and args[1] in subs:
        return (args[0], args[1])
    return (args[0],)


def plan(args: list[str]) -> Plan:
    """The remote's arguments for `args` (the command line less --remote) and what travels."""
    words = command_words(args)
    result = Plan(words or ("",), [])
    sending = bool(words) and result.sending
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            result.args += [token, *tokens]
            break
        option, eq, value = token.partition("=")
        if option in FETCHED and option.startswith("--") and eq or token in FETCHED:
            target = value if eq else next(tokens, "")
            result.args += [option, scratch_for(target) if target not in ("", "-") else target]
        elif words and words[0] in IN_MIRROR and option in DIR_OPTIONS and (eq or token in DIR_OPTIONS):
            target = value if eq else next(tokens, "")
            local = Path(target).expanduser()
            result.args += [option, Mirror(real_path(local)) if local.is_dir() else target]
        elif token == "--checkpoints" and words == ("results",):
            result.checkpoints = True
        elif sending and token == "--command":
            result.sends_cwd = True
            result.args.append(token)
        elif sending and not token.startswith("-") and token not in words and Path(token).expanduser().is_file():
            path = real_path(Path(token))
            result.sends.append(path)
            result.args.append(Mirror(path))
        else:
            result.args.append(token)
    return result


def real_path(path: Path) -> Path:
    """`path` absolute, its directories' symlinks resolved (as git's --show-toplevel and the working
    directory are), so that it lies under its tree's root; a symlinked file keeps its own name."""
    path = path.expanduser().absolute()
    return path.resolve() if path.is_dir() else path.parent.resolve() / path.name


def scratch_for(target: str) -> Scratch:
    local = Path(target).expanduser()
    return Scratch(f"out-{secrets.token_hex(6)}{local.suffix}", local)
