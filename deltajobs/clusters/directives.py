"""The sbatch options a user types beyond the resources: job chains, partition lists, constraints,
QOS, reservations, excluded nodes, mail and containers. Each is checked here, once, against SLURM's
syntax (and the cluster profile where the cluster decides), so that whatever reaches an `#SBATCH`
line is plain text; a bad value raises a SpecError naming the field and the valid forms.
"""

from __future__ import annotations

import re

from deltajobs.clusters.profile import ClusterProfile
from deltajobs.errors import SpecError

PARTITION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SLURM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # QOS and reservation names
JOB_ID = r"\d+(?:_\d+)?|local-\d+(?:-[a-z]?\d+)?"  # 1234, an array task 1234_5, a local job local-PID-START
# sbatch(1), --dependency: after:job_id[[+time][:jobid[+time]...]]; the others take job ids only.
DEPENDENCY_KINDS = ("after", "afterany", "afternotok", "afterok", "singleton")
_AFTER = re.compile(rf"after(:(?:{JOB_ID})(\+\d+)?)+")
_WITH_IDS = re.compile(rf"(afterany|afternotok|afterok)(:(?:{JOB_ID}))+")
# sbatch(1), --mail-type.
MAIL_TYPES = (
    "NONE",
    "BEGIN",
    "END",
    "FAIL",
    "REQUEUE",
    "ALL",
    "INVALID_DEPEND",
    "STAGE_OUT",
    "TIME_LIMIT",
    "TIME_LIMIT_90",
    "TIME_LIMIT_80",
    "TIME_LIMIT_50",
    "ARRAY_TASKS",
)
MAIL_USER = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|[a-z_][a-z0-9_-]{0,31}")
# A SLURM hostlist: gpua001,gpub[010-012,020].
HOSTLIST = re.compile(r"[A-Za-z0-9-]+(\[\d+(-\d+)?(,\d+(-\d+)?)*\])?(,[A-Za-z0-9-]+(\[\d+(-\d+)?(,\d+(-\d+)?)*\])?)*")
CONTAINER = re.compile(r"docker://[A-Za-z0-9][A-Za-z0-9._/:@+-]*|[A-Za-z0-9_./~+-]+\.sif")


def partition_names(text: str, field: str = "resources.partition") -> list[str]:
    """`gpuA100x4,gpuA40x4` -> its names, in order; SLURM runs the job on whichever starts it first."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if not PARTITION_NAME.fullmatch(name):
            raise SpecError(field, f"{text!r} is not a partition name or a comma-separated list of them")
    if len(set(names)) != len(names):
        raise SpecError(field, f"{text!r} names a partition twice")
    return names


def dependency(text: str, field: str = "schedule.dependency") -> str:
    """Check a `--dependency` value: items joined by `,` (all must hold), each `KIND:ID[:ID...]`,
    `after:ID+MINUTES` (start ID's successor MINUTES after ID starts) or `singleton`."""
    items = text.strip().split(",")
    for item in items:
        if item == "singleton" or _AFTER.fullmatch(item) or _WITH_IDS.fullmatch(item):
            continue
        raise SpecError(
            field,
            f"{item!r} is not a dependency; use KIND:JOBID[:JOBID...] with KIND one of: "
            f"{', '.join(DEPENDENCY_KINDS[:-1])} (after:JOBID+MINUTES staggers starts), or singleton",
        )
    return ",".join(items)


def dependency_ids(text: str) -> list[str]:
    """The job ids a dependency value names (`afterok:12:13,after:14+5` -> 12, 13, 14), in order."""
    ids: list[str] = []
    for item in text.split(","):
        for word in item.split(":")[1:]:
            job_id = word.split("+")[0].strip()
            if job_id and job_id not in ids:
                ids.append(job_id)
    return ids


def after_dependency(job_ids: str, field: str = "--after") -> str:
    """`--after 12,13` -> `afterok:12:13`: start once every listed job has completed successfully."""
    ids = [job_id.strip() for job_id in job_ids.split(",")]
    for job_id in ids:
        if not re.fullmatch(f"(?:{JOB_ID})", job_id):
            raise SpecError(field, f"{job_id!r} is not a job id; use ID[,ID...] such as 1234,1235")
    return "afterok:" + ":".join(ids)


def constraint(text: str, profile: ClusterProfile, field: str = "resources.constraint") -> None:
    """`projects&scratch`: labels joined by `&`, each one the profile lists (any label where it lists none)."""
    labels = text.split("&")
    valid = profile.constraints
    for label in labels:
        if not SLURM_NAME.fullmatch(label) or (valid and label not in valid):
            choices = ", ".join(valid) if valid else "letters, digits and _.-"
            raise SpecError(
                field, f"{label!r} is not a constraint on {profile.name}; join with & labels from: {choices}"
            )


def mail_type(text: str, field: str = "schedule.mail_type") -> None:
    for item in text.split(","):
        if item.strip().upper() not in MAIL_TYPES:
            raise SpecError(
                field, f"{item!r} is not a mail type; choose one or more (comma-separated) of: {', '.join(MAIL_TYPES)}"
            )


def check(pattern: re.Pattern[str], text: str, field: str, what: str) -> None:
    if not pattern.fullmatch(text):
        raise SpecError(field, f"{text!r} is not {what}")


def schedule(values: dict[str, str | None]) -> None:
    """Check the `schedule` section's values (the keys are its field names)."""
    if values.get("dependency"):
        dependency(str(values["dependency"]))
    if values.get("mail_type"):
        mail_type(str(values["mail_type"]))
    checks = {
        "qos": (SLURM_NAME, "a QOS name (letters, digits and _.-)"),
        "reservation": (SLURM_NAME, "a reservation name (letters, digits and _.-)"),
        "exclude": (HOSTLIST, "a SLURM node list such as gpua001,gpub[010-012]"),
        "mail_user": (MAIL_USER, "an e-mail address or a user name"),
    }
    for key, (pattern, what) in checks.items():
        value = values.get(key)
        if value:
            check(pattern, value, f"schedule.{key}", what)


def container(text: str, field: str = "environment.container") -> None:
    check(CONTAINER, text, field, "an Apptainer image: a .sif path or docker://IMAGE[:TAG]")
