"""`deltajobs init`: find the user's accounts, write the user config, check the data directory."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import ClusterOpt, JsonOpt
from deltajobs.errors import DeltaJobsError, SpecError


@app.command("init")
def init_command(
    account: Annotated[
        str | None, typer.Option("--account", "-A", help="Account to charge, e.g. bgvu-delta-gpu.")
    ] = None,
    cluster: ClusterOpt = None,
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="Where datasets live (e.g. /projects/bgvu/data).")
    ] = None,
    runs_dir: Annotated[
        Path | None, typer.Option("--runs-dir", help="Where run directories go (a shared filesystem).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write your config: account, cluster, where data and runs go.

    Write ~/.config/deltajobs/config.yaml: your account, cluster, data and runs directories."""
    from deltajobs.charge.accounting import AccountingUnavailable, accounts
    from deltajobs.clusters.profile import load_profile
    from deltajobs.schema import check_constraints
    from deltajobs.spec.context import active_cluster
    from deltajobs.spec.settings import load_settings, write_user_config

    settings = load_settings()
    cluster_name = active_cluster(settings, cluster)
    profile = load_profile(cluster_name)
    try:
        found = [row.account for row in accounts()]
    except AccountingUnavailable:
        found = []
    if account is None:
        gpu = [a for a in found if a.endswith(profile.account_suffix["gpu"])]
        if len(gpu) == 1 or (gpu and not sys.stdin.isatty()):
            account = gpu[0]
        elif sys.stdin.isatty():
            hint = f" ({', '.join(found)})" if found else ""
            account = typer.prompt(f"Account to charge{hint}", default=gpu[0] if gpu else None)
        else:
            raise SpecError("account", "not found with `accounts`; pass --account CODE-delta-gpu")
    check_constraints(account, "account", {"pattern": profile.account_pattern})
    if found and account not in found:
        raise SpecError("account", f"{account!r} is not one of yours; choose one of: {', '.join(found)}")
    values: dict[str, object] = {"account": account, "cluster": cluster_name}
    if data_root is not None:
        values["data_root"] = str(data_root.expanduser().absolute())
    if runs_dir is None:
        runs_dir = proposed_runs_dir(profile.work_dir, account, settings.runs_path)
    if runs_dir is not None:
        values["runs_dir"] = str(runs_dir.expanduser().absolute())
    path = write_user_config(values)
    settings = load_settings()
    data_status = check_data(settings.data_path)
    if as_json:
        emit_json({"config": str(path), **values, "data_root": str(settings.data_path), "data": data_status})
        return
    typer.echo(f"wrote {path}")
    typer.echo(f"  account:  {account}{' (from `accounts`)' if account in found else ''}")
    typer.echo(f"  cluster:  {cluster_name}")
    typer.echo(f"  runs in:  {settings.runs_path}")
    typer.echo(f"  data in:  {settings.data_path}: {data_status}")
    typer.echo("next: deltajobs render mnist, then deltajobs submit mnist --wait")


def proposed_runs_dir(work_dir: str | None, account: str, current: Path) -> Path | None:
    """The cluster's place for job I/O (Delta: /work/hdd/<code>/$USER/deltajobs-runs) when the runs
    would otherwise stay under $HOME, which NCSA says is not for job I/O, and that place exists."""
    if work_dir is None or not (current == Path.home() or Path.home() in current.parents):
        return None
    base = Path(work_dir.format(group=account.split("-", 1)[0], user=getpass.getuser()))
    if not base.is_dir():
        note(f"runs stay in {current}, under $HOME (not for job I/O); {base} does not exist: pass --runs-dir")
        return None
    proposal = base / "deltajobs-runs"
    if sys.stdin.isatty():
        return Path(typer.prompt("Runs directory (job I/O belongs here, not in $HOME)", default=str(proposal)))
    return proposal


def check_data(root: Path) -> str:
    """'MNIST ok (60000 train, 10000 test)' or what to do about it."""
    from deltajobs.train.fetch import verify

    try:
        counts = verify(root)
    except DeltaJobsError as err:
        return str(err)
    return f"MNIST ok ({counts['train']} train, {counts['test']} test)"
