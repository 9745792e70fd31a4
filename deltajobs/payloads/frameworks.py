"""What a user's script asks of its framework, read from its source before submitting (issue 34).

    lightning_warnings(source, "train.py", Shape(tasks_per_node=2, nodes=1, gpus_per_node=2))

Lightning under SLURM takes its ranks from srun (SLURMEnvironment) and stops in fit() when
`Trainer(devices=...)` is not SLURM's --ntasks-per-node or `num_nodes=` is not its --nodes; with one
device on one node it does not stop: every task trains alone, as rank 0. Where the script says so in
literals (`devices=4`, `devices=[0, 1]`, `num_nodes=2`; `accelerator="cpu"` with devices "auto": 1;
devices "auto" or -1 on GPUs: the node's, each task sees them all; an omitted num_nodes: 1), one
line names both values and what to change. A job named `interactive` or `bash` is Lightning's
"interactive mode": SLURM is not used and nothing is checked (a mismatch waits; on several nodes
every node is node 0). Only the source is read (`ast`): nothing of the script, of torch or of
Lightning is imported. A value that is not a literal says nothing, nor does a script that does not
parse (compile_check refuses it with its line).
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from dataclasses import dataclass

ROOTS = ("lightning", "pytorch_lightning", "lightning_fabric")  # where Trainer and Fabric come from
CLASSES = ("Trainer", "Fabric")
INTERACTIVE_NAMES = ("bash", "interactive")  # a job so named: Lightning's "interactive mode" (SLURM unused)
UNKNOWN = object()  # a value the source does not say


@dataclass(frozen=True)
class Shape:
    """How the job runs its tasks: the rendered script's --ntasks-per-node and --nodes, and why."""

    tasks_per_node: int
    nodes: int
    gpus_per_node: int = 0
    tasks_given: bool = False  # resources.tasks_per_node set, rather than one task per GPU
    name: str = ""  # the job's name (SLURM_JOB_NAME)

    def tasks(self) -> str:
        count = f"{self.tasks_per_node} task{'s' if self.tasks_per_node != 1 else ''} per node"
        if self.tasks_given:
            return f"{count} (resources.tasks_per_node={self.tasks_per_node})"
        return f"{count} (--gpus {self.gpus_per_node})" if self.gpus_per_node else f"{count} (no GPUs)"

    @property
    def interactive(self) -> bool:
        """Lightning's "interactive mode": no SLURMEnvironment, so nothing is checked against SLURM."""
        return self.name in INTERACTIVE_NAMES

    def tasks_flag(self, want: int) -> str:
        """The flags that make the job run `want` tasks per node."""
        if not self.gpus_per_node:
            return f"--set resources.tasks_per_node={want}"
        return f"--gpus {want}" + (f" --set resources.tasks_per_node={want}" if self.tasks_given else "")


def lightning_warnings(source: str | bytes, shown: str, shape: Shape, preset: Collection[str] = ()) -> list[str]:
    """One line for each way a Lightning Trainer(...) or Fabric(...) call of `source` disagrees with
    the job's `shape`, in the order of the source; `shown` names the script (`train.py:12: ...`).
    `preset`: the names of the environment variables the job sets (PL_TRAINER_DEVICES gives an
    omitted devices=, LT_DEVICES any Fabric's): what they decide is not known here."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    names = _imported_names(tree)
    calls = sorted(
        (node for node in ast.walk(tree) if isinstance(node, ast.Call) and _lightning_class(node.func, names)),
        key=lambda node: (node.lineno, node.col_offset),
    )
    lines: list[str] = []
    for call in calls:
        callee = _lightning_class(call.func, names) or ""
        where = f"{shown}:{call.lineno}"
        if shape.interactive and shape.nodes > 1 and not lines:
            lines.append(
                f"{where}: the job is named {shape.name!r}, which Lightning takes for an interactive session: "
                f"it ignores SLURM_NODEID and each of the {shape.nodes} nodes counts itself node 0. "
                "Name the job otherwise (--set name=train)."
            )
        lines += _call_warnings(_Call(call, callee, preset), where, shape)
    return lines


class _Call:
    """A Trainer(...) or Fabric(...) call: its arguments as the source gives them."""

    def __init__(self, call: ast.Call, callee: str, preset: Collection[str]) -> None:
        self.callee = callee
        self.keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
        self.spread = bool(call.args) or len(self.keywords) < len(call.keywords)  # **options
        self.fabric = callee.rsplit(".", 1)[-1] == "Fabric"
        self.preset = preset

    def value(self, name: str, default: object) -> object:
        """The literal value of argument `name` (its default if omitted), else UNKNOWN."""
        if self.fabric and f"LT_{name.upper()}" in self.preset:  # Fabric takes LT_* over its arguments
            return UNKNOWN
        if name in self.keywords:
            try:
                return ast.literal_eval(self.keywords[name])
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return UNKNOWN
        if self.spread or f"PL_TRAINER_{name.upper()}" in self.preset:
            return UNKNOWN
        return default

    def text(self, name: str) -> str:
        return f"{name}={ast.unparse(self.keywords[name])}"


def _call_warnings(call: _Call, where: str, shape: Shape) -> list[str]:
    accelerator = call.value("accelerator", "auto")
    devices_value = call.value("devices", "auto")
    devices, why = _count(devices_value), ""
    if devices is None and devices_value in ("auto", -1, "-1"):  # every device a task sees
        if accelerator == "cpu" and devices_value == "auto":
            devices, why = 1, "on CPU"  # CPUAccelerator.auto_device_count()
        elif accelerator in ("gpu", "cuda", "auto") and shape.gpus_per_node:
            devices, why = shape.gpus_per_node, "one per GPU it sees"  # --gpu-bind=none: all of the node's
    named = ("accelerator", "devices") if why else ("devices",)  # what decides the count, as written
    shown = ", ".join(call.text(name) for name in named if name in call.keywords)
    num_nodes = call.value("num_nodes", 1)
    num_nodes = num_nodes if type(num_nodes) is int else None
    alone = devices == 1 and num_nodes == 1 and call.value("strategy", "auto") == "auto"

    def consequence(said: str) -> str:
        stop = f"Lightning will stop with '{said} ... does not match'"
        if shape.interactive:  # LightningEnvironment: a world of devices x num_nodes, never checked
            stop = f"Lightning does not check it in a job named {shape.name!r}: the ranks will wait for "
            stop += "ranks that never start"
        if alone:
            return f"each of the {shape.tasks_per_node * shape.nodes} tasks will train alone, as rank 0"
        if devices is None or num_nodes is None:
            return f"{stop} (or, with one device, each task will train alone)"
        return stop

    lines = []
    if devices is not None and devices != shape.tasks_per_node:
        runs = f" runs {devices} process{'es' if devices != 1 else ''} per node ({why})" if why else ""
        lines.append(
            f"{where}: {call.callee}({shown}){runs} but the job runs {shape.tasks()}; "
            f"{consequence(f'devices={devices}')}. "
            f"Pass devices={shape.tasks_per_node} or {shape.tasks_flag(devices)}."
        )
    if num_nodes is not None and num_nodes != shape.nodes:
        given = f"({call.text('num_nodes')})" if "num_nodes" in call.keywords else "() without num_nodes= (default 1)"
        nodes = f"{shape.nodes} node{'s' if shape.nodes != 1 else ''}"
        lines.append(
            f"{where}: {call.callee}{given} but the job runs on {nodes} (--nodes {shape.nodes}); "
            f"{consequence(f'num_nodes={num_nodes}')}. Pass num_nodes={shape.nodes} or --nodes {num_nodes}."
        )
    return lines


def _count(value: object) -> int | None:
    """How many devices per node a literal devices= names: 4, [0, 1], "2", "0,1"; None if not known."""
    if type(value) is int:
        return value if value > 0 else None
    if isinstance(value, (list, tuple)) and value and all(type(v) is int for v in value):
        return len(value)
    if isinstance(value, str):  # as Lightning reads it: "0,1" is a list of indices, "2" a count
        words = [w.strip() for w in value.split(",") if w.strip()]
        if "," in value and words and all(w.isdigit() for w in words):
            return len(words)
        if value.strip().isdigit() and int(value) > 0:
            return int(value)
    return None


def _imported_names(tree: ast.AST) -> dict[str, str]:
    """Each name the script binds by import, to the dotted path it stands for (`L` -> `lightning`)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]  # `import lightning.pytorch` binds `lightning`
                names[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _lightning_class(func: ast.expr, names: dict[str, str]) -> str | None:
    """The call's name as written (`L.Trainer`) where it is Lightning's Trainer or Fabric, else None."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.insert(0, func.attr)
        func = func.value
    if not isinstance(func, ast.Name) or func.id not in names:
        return None
    path = ".".join([names[func.id], *parts])
    if path.split(".")[0] in ROOTS and path.rsplit(".", 1)[-1] in CLASSES:
        return ".".join([func.id, *parts])
    return None
