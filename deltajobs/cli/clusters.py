"""`deltajobs cluster`: discover a profile from the live SLURM, list profiles, show one.

    deltajobs cluster discover [--name NAME] [-o FILE|-]
    deltajobs cluster list
    deltajobs cluster show NAME

A discovered profile is written to ~/.config/deltajobs/clusters/NAME.yaml and is then usable
everywhere a built-in one is (`--cluster NAME`, DELTAJOBS_CLUSTER, detection from ClusterName).
A user profile named like a built-in one replaces it; `cluster list` says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import JsonOpt
from deltajobs.osutil import write_atomic

cluster_app = typer.Typer(
    no_args_is_help=True,
    help="Cluster profiles: discover, list and show them.\n\n"
    "Cluster profiles: discover one from the SLURM on this machine, list them, show one.",
)
app.add_typer(cluster_app, name="cluster")

NameArg = Annotated[str, typer.Argument(help="A profile name (see `deltajobs cluster list`).")]


@cluster_app.command("discover")
def discover_command(
    name: Annotated[
        str | None, typer.Option("--name", help="Profile name (default: the cluster's ClusterName).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the profile to FILE (`-` for stdout) instead of the config dir."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing user profile, or replace a built-in one.")
    ] = False,
) -> None:
    """Write a profile for this SLURM cluster (run on a login node).

    Read from scontrol show partition/node/config."""
    from deltajobs.clusters.discover_profile import PLACEHOLDERS, discover_cluster, render_profile
    from deltajobs.clusters.profile import PROFILE_DIR, user_profile_dir
    from deltajobs.errors import SpecError

    found = discover_cluster(name)
    profile = found.profile
    text = render_profile(found, f"SLURM cluster {profile.slurm_cluster_name}")
    target = output or user_profile_dir() / f"{profile.name}.yaml"
    if str(target) != "-" and not force:
        if output is None and (PROFILE_DIR / f"{profile.name}.yaml").is_file():
            raise SpecError("--name", f"{profile.name!r} is a built-in profile; pick another --name (or --force)")
        if target.exists():
            raise SpecError("--output", f"{target} exists; pass --force to overwrite it")
    echo = (lambda line: typer.echo(line, err=True)) if str(target) == "-" else typer.echo
    echo(f"Discovered {len(profile.partitions)} partitions on {profile.slurm_cluster_name}:")
    for line in partition_table(profile.partitions.values(), profile.default_partition):
        echo(line)
    for part, notes in found.notes.items():
        for text_note in notes:
            echo(f"  {part}: {text_note}")
    for part, why in found.skipped.items():
        echo(f"  left out {part}: {why}")
    for text_note in found.cluster_notes:
        echo(f"  {text_note}")
    echo("SLURM cannot know these; they are TODO lines in the file, fill them in:")
    for placeholder in PLACEHOLDERS:
        echo(f"  - {placeholder}")
    if str(target) == "-":
        typer.echo(text, nl=False)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
    echo(f"wrote {target}")
    if output is None:
        echo(f"use it with --cluster {profile.name} (or nothing: ClusterName {profile.slurm_cluster_name} picks it)")
    else:
        echo(f"to use it, copy it to {user_profile_dir()}/")


@cluster_app.command("list")
def list_command(as_json: JsonOpt = False) -> None:
    """List built-in and user profiles.

    A user profile named like a built-in one replaces it."""
    from deltajobs.clusters.profile import PROFILE_DIR, load_profile, profile_paths

    rows = []
    for name, path in profile_paths().items():
        user = path.parent != PROFILE_DIR
        profile = load_profile(name)
        rows.append(
            {
                "name": name,
                "source": "user" if user else "built-in",
                "path": str(path),
                "slurm_cluster_name": profile.slurm_cluster_name,
                "partitions": len(profile.partitions),
                "replaces_builtin": user and (PROFILE_DIR / path.name).is_file(),
            }
        )
    if as_json:
        emit_json(rows)
        return
    typer.echo(f"  {'profile':<16}{'source':<10}{'ClusterName':<16}{'partitions':>10}  file")
    for row in rows:
        mark = "  (replaces the built-in one)" if row["replaces_builtin"] else ""
        typer.echo(
            f"  {row['name']:<16}{row['source']:<10}{row['slurm_cluster_name']:<16}{row['partitions']:>10}"
            f"  {row['path']}{mark}"
        )


@cluster_app.command("show")
def show_command(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show one profile: its partitions, limits and charge rules."""
    import dataclasses

    from deltajobs.clusters.profile import load_profile, profile_paths

    profile = load_profile(name)
    if as_json:
        emit_json({**dataclasses.asdict(profile), "path": str(profile_paths()[name])})
        return
    typer.echo(f"{profile.name}: {profile.description}")
    typer.echo(f"  file: {profile_paths()[name]}")
    typer.echo(f"  ClusterName: {profile.slurm_cluster_name}; modules: {', '.join(profile.modules) or 'none'}")
    for line in partition_table(profile.partitions.values(), profile.default_partition):
        typer.echo(line)
    if any(p.gpu_equiv is None and p.mem_gb_per_cpu is None for p in profile.partitions.values()):
        note("partitions without a charge rule cannot be priced by `estimate`")


def partition_table(partitions: Any, default: str) -> list[str]:
    """One line per partition: GPUs, CPUs, memory, limits, charge rule and flags."""
    lines = [f"  {'partition':<24}{'GPUs':>5}{'CPUs':>6}{'mem':>8}{'max time':>11}{'nodes':>6}  charge"]
    for p in partitions:
        if p.gpu_equiv is not None:
            rule = f"x{p.charge_factor:g}, 1 GPU = {p.gpu_equiv.cpus:g} cores = {p.gpu_equiv.mem_gb:g}G"
        elif p.mem_gb_per_cpu is not None:
            rule = f"x{p.charge_factor:g}, 1 core = {p.mem_gb_per_cpu:g}G"
        else:
            rule = "none"
        flags = [p.gpu_type or "", *(w for w, on in (("interactive", p.interactive), ("preempt", p.preempt)) if on)]
        flags += ["default"] if p.name == default else []
        extra = f"  ({', '.join(f for f in flags if f)})" if any(flags) else ""
        nodes = str(p.max_nodes) if p.max_nodes else "-"
        lines.append(f"  {p.name:<24}{p.gpus:>5}{p.cpus:>6}{p.mem_gb:>7g}G{p.max_time:>11}{nodes:>6}  {rule}{extra}")
    return lines
