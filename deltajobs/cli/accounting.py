"""Commands about Service Units: estimate (before submitting), accounts (balance), charge (after)."""

from __future__ import annotations

from typing import Annotated

import typer

from deltajobs.cli.app import app, emit_json
from deltajobs.cli.options import JobFlags, JsonOpt, PayloadArg, ScriptArgs, job_flags


@app.command("estimate")
@job_flags
def estimate_command(
    job: PayloadArg = None, script_args: ScriptArgs = None, *, flags: JobFlags, as_json: JsonOpt = False
) -> None:
    """Estimate a job's charge in SU before submitting it.

    Estimate a job's charge in SU: the worst case (full walltime) and, if it ran before, the typical
    case; as billed, with the formula's figure and the minimum's source where a minimum charge applies;
    where units are whole (DeltaAI's GH200s), each reading of the rule and the request one unit fewer."""
    from deltajobs.charge.advice import one_unit_fewer
    from deltajobs.charge.estimate import describe, describe_minimum, estimate_job, format_su
    from deltajobs.clusters.units import format_duration, format_walltime
    from deltajobs.registry.history import typical_elapsed
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    resolved = flags.resolve(job, settings, args=script_args, require_account=False)
    est = estimate_job(resolved)
    fewer = one_unit_fewer(est, resolved.spec.resources.ntasks_per_node)
    elapsed = typical_elapsed(settings, resolved)
    typical = None
    if elapsed is not None:
        typical = {"elapsed_s": elapsed, "su": est.su_for(elapsed), "su_formula": est.formula_su_for(elapsed)}
    defaults, array = resolved.payload.defaults(), resolved.payload.array()
    priced = None
    if array is not None:  # an array script: per task, and every task together
        from deltajobs.charge.sbatch_price import ArrayPrice

        priced = ArrayPrice(array, est)
    if as_json:
        emit_json(
            {
                "job": resolved.spec.name,
                "cluster": resolved.profile.name,
                "account": resolved.spec.account,
                **est.to_dict(),
                "walltime": format_walltime(int(est.seconds)),
                "typical": typical,
                "one_fewer": fewer.to_dict() if fewer else None,
                **({"defaults": defaults} if defaults else {}),
                **({"array": priced.to_dict()} if priced is not None else {}),
            }
        )
        return
    res, reserved = resolved.spec.resources, est.reserved
    gpu_text = f"{reserved['gpus']:g} GPU, " if est.kind == "gpu" else ""
    node_text = f"{res.nodes} node{'s' if res.nodes != 1 else ''}"
    mem_text = f"{reserved['mem_gb']:g}G" if res.exclusive else res.mem
    typer.echo(
        f"{resolved.spec.name} on {est.partition} ({resolved.profile.name}): {node_text}, {gpu_text}"
        f"{reserved['cpus']:g} CPU, {mem_text} per node{' (exclusive)' if res.exclusive else ''}, "
        f"{format_walltime(int(est.seconds))}"
    )
    typer.echo(f"charged per node as {est.explain()}")
    typer.echo(f"worst case: {describe(est)}" + (" per task" if priced is not None else ""))
    if priced is not None:
        typer.echo(f"array:      {priced.describe()}")
    if defaults:
        title = resolved.profile.title or resolved.profile.name
        typer.echo(f"defaults:   {title}'s, where the script says nothing: {', '.join(defaults)}")
    if typical is not None:
        ran = f"earlier runs took {format_duration(elapsed or 0)}"
        if typical["su"] > typical["su_formula"]:
            ran = f"{format_su(typical['su_formula'])} SU by the formula; {ran}"
        typer.echo(f"typical:    {format_su(typical['su'])} SU ({ran})")
    if est.minimum_applies or (typical is not None and typical["su"] > typical["su_formula"]):
        typer.echo(f"minimum:    {describe_minimum(est)}; what was billed: deltajobs charge --detail")
    if fewer is not None:
        typer.echo(f"advice:     {fewer.message}")


@app.command("accounts")
def accounts_command(as_json: JsonOpt = False) -> None:
    """Show your accounts and their balances (Delta's `accounts`)."""
    from deltajobs.charge.accounting import accounts
    from deltajobs.charge.estimate import format_su

    rows = accounts()
    if as_json:
        emit_json([row.to_dict() for row in rows])
        return
    typer.echo(f"{'account':<20}{'balance SU':>14}{'deposited SU':>15}{'used':>7}  description")
    for row in rows:
        deposited = "-" if row.deposited_su is None else format_su(row.deposited_su)
        used = "-" if not row.deposited_su else f"{(row.used_su or 0) / row.deposited_su:.1%}"
        typer.echo(f"{row.account:<20}{format_su(row.balance_su):>14}{deposited:>15}{used:>7}  {row.description}")


@app.command("charge")
def charge_command(
    account: Annotated[
        str | None, typer.Option("--account", "-A", help="Account (default: DELTAJOBS_ACCOUNT / config).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="Start date YYYY-MM-DD (default: 30 days ago).")] = None,
    detail: Annotated[bool, typer.Option("--detail", help="One row per job.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """What was charged: Delta's `jobcharge`, or sacct's figures.

    What was charged: Delta's `jobcharge`, or computed from sacct (elapsed x billing / 3,600,000)."""
    from deltajobs.charge.estimate import format_su
    from deltajobs.charge.report import charge_report, under_minimum
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    report = charge_report(account or settings.account, since, detail)
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    below = under_minimum(report, settings)
    if as_json:
        data = report.to_dict()
        if not detail:
            data.pop("jobs")
        if below is not None:
            data["minimum"] = below
        emit_json(data)
        return
    source = "jobcharge" if report.source == "jobcharge" else "sacct (elapsed x billing / 3,600,000)"
    scope = f"account {report.account}" if report.account else "all accounts"
    typer.echo(f"Charges for {scope}, {report.window or 'jobcharge default window'}, from {source}")
    if detail:
        typer.echo(
            f"{'JobID':<12}{'Partition':<24}{'Elapsed':>9}  {'User':<10}{'JobName':<20}{'Start':<21}"
            f"{'Billing':>8}{'SU':>9}  AllocTRES"
        )
        for job in report.jobs:
            typer.echo(
                f"{job.job_id:<12}{job.partition:<24}{job.elapsed_s:>9}  {job.user:<10}{job.name[:19]:<20}"
                f"{job.start:<21}{job.billing:>8g}{format_su(job.su):>9}  {job.alloc_tres}"
            )
        typer.echo("")
    typer.echo(f"{report.by:<24}{'Charge (SU)':>12}")
    for name, su in report.totals.items():
        typer.echo(f"{name:<24}{format_su(su):>12}")
    typer.echo(f"{'Total':<24}{format_su(report.total_su):>12}")
    if below is not None:
        typer.echo(f"note: {below['note']}")
