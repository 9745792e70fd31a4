"""`deltajobs remote setup NAME`: this very version of deltajobs, installed into WORKDIR/venv there.

1. A wheel of the local deltajobs (`pip wheel --no-deps` of the checkout it runs from; an installed
   deltajobs without its source is fetched at the same version by pip instead).
2. rsync it to WORKDIR/wheels/.
3. On the remote, in bash with Lmod: `module reset` and the record's modules (Delta: the PyTorch
   module, whose Python has torch), then `PYTHON -m venv --system-site-packages WORKDIR/venv` (torch
   stays the module's), `pip install` of the wheel (its dependencies from the remote's pip index),
   once more with --force-reinstall --no-deps (a rebuilt wheel of the same version replaces the old).
4. `deltajobs doctor` there, through the dispatcher like any command.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from deltajobs import __version__
from deltajobs.remote import ssh as seam
from deltajobs.remote.records import workdir_rsync, workdir_shell
from deltajobs.remote.ssh import RemoteError, Ssh
from deltajobs.remote.sync import Tree, check, push_to

INSTALL_TIMEOUT_S = 1200
WHEEL_TIMEOUT_S = 300


def source_dir() -> Path | None:
    """The checkout this deltajobs runs from (an editable install or the repository), if any."""
    import deltajobs

    root = Path(deltajobs.__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "deltajobs" / "__init__.py").is_file() else None


def build_wheel(out: Path) -> Path:
    """A wheel of the local deltajobs in `out`."""
    source = source_dir()
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out)]
    if source is not None:
        try:
            import hatchling  # noqa: F401  (the build backend is here: no download needed)

            argv.append("--no-build-isolation")
        except ImportError:
            pass
        argv.append(str(source))
    else:
        argv.append(f"deltajobs=={__version__}")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=WHEEL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RemoteError(f"building the wheel of deltajobs {__version__} took over {WHEEL_TIMEOUT_S}s") from None
    wheels = sorted(out.glob("deltajobs-*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise RemoteError(f"building the wheel of deltajobs failed: {lines[-1] if lines else 'no wheel'}")
    return wheels[-1]


# A module whose python is itself a venv (minidelta's envs; some conda set-ups): `venv` builds on
# its base interpreter, so --system-site-packages would miss the module's packages (torch). A .pth
# file then appends them to our venv's path, after its own packages. Delta's conda python: no-op.
MODULE_ENV_PTH = [
    "MP=$(\"$PY\" -c 'import sys; print(sys.prefix)')",
    "BP=$(\"$W/venv/bin/python\" -c 'import sys; print(sys.base_prefix)')",
    'PTH=$("$W/venv/bin/python" -c \'import sysconfig; print(sysconfig.get_paths()["purelib"])\')'
    "/_deltajobs_module.pth",
    'if [ "$MP" != "$BP" ]; then "$PY" -c \'import site, sys; print("\\n".join(p for p in site.getsitepackages() '
    'if p.startswith(sys.prefix)))\' > "$PTH"; else rm -f "$PTH"; fi',
]


REMOTE_EXTRAS = "[ui]"  # installed with deltajobs on a remote: what its commands need beyond the core


def install_script(ssh: Ssh, wheel_name: str) -> str:
    """The bash the remote runs: modules, venv, pip (stdout: pip's words, kept for a failure)."""
    from deltajobs.backends.probe import LMOD_INIT

    record = ssh.record
    wheel = f'"$W"/wheels/{shlex.quote(wheel_name)}'
    with_extras = f'"$W"/wheels/{shlex.quote(wheel_name + REMOTE_EXTRAS)}'
    modules = " ".join(shlex.quote(m) for m in record.modules)
    lines = [
        "set -e",
        f"W={workdir_shell(record)}",
        LMOD_INIT,
        *([f"module reset >/dev/null 2>&1 || true; module load {modules}"] if record.modules else []),
        f"PY=$(command -v {shlex.quote(record.python)})"
        f" || {{ echo {shlex.quote(f'no {record.python} on PATH after the modules')} >&2; exit 3; }}",
        'if [ ! -x "$W/venv/bin/python" ]; then "$PY" -m venv --system-site-packages "$W/venv"; fi',
        *MODULE_ENV_PTH,
        # with the ui extra (Flask): `deltajobs ui --remote NAME` works once set up
        '"$W/venv/bin/python" -m pip install --disable-pip-version-check --quiet ' + with_extras,
        '"$W/venv/bin/python" -m pip install --disable-pip-version-check --quiet --force-reinstall --no-deps ' + wheel,
        'echo "$PY"',
    ]
    return "; ".join(lines)  # one line: the login shell that reads it may be tcsh


def install(ssh: Ssh, tell: Callable[[str], None]) -> str:
    """Steps 1-3; returns the interpreter the venv was made over. `tell` gets a line per step."""
    with tempfile.TemporaryDirectory(prefix="deltajobs-wheel-") as tmp:
        tell(f"building the wheel of deltajobs {__version__}")
        wheel = build_wheel(Path(tmp))
        tell(f"sending {wheel.name} to {ssh.name}:{workdir_rsync(ssh.record)}/wheels/")
        push_to(ssh, Tree(wheel.parent, [Path(wheel.name)]), f"{workdir_rsync(ssh.record)}/wheels")
    modules = ", ".join(ssh.record.modules) or "no modules"
    tell(f"installing into {ssh.record.workdir}/venv on {ssh.name} ({modules}; {ssh.record.python})")
    done = seam.run(ssh.command("bash -c " + shlex.quote(install_script(ssh, wheel.name))), timeout=INSTALL_TIMEOUT_S)
    if done.returncode == 255:
        check(ssh, done, f"installing deltajobs on {ssh.name}")
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise RemoteError(
            f"installing deltajobs on {ssh.name} failed: {lines[-1] if lines else f'exit code {done.returncode}'}"
        )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "?"
