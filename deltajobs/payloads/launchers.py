"""The launchers that start their node's processes themselves, and what deltajobs fills in for
them: `torchrun` and `accelerate launch` (also `python -m accelerate.commands.launch`). A job whose
command is one runs one task per node (`payloads.choose.launcher_tasks`), and each node's launcher
gets the job's nodes, processes and rendezvous on the first node unless the user gave them
(`with_rendezvous`, called by the task wrapper in `payloads.runner` as the program starts).

Stdlib only: every task imports it.
"""

from __future__ import annotations

import re
from pathlib import Path


def with_rendezvous(argv: list[str], env: dict[str, str], gpus_per_node: int) -> list[str]:
    """A launcher's command (one task per node: `torchrun`, `accelerate launch`) gets the job's
    nodes, processes and rendezvous, unless given; any other command is returned as it is."""
    found = launcher(argv)
    if found is None:
        return argv
    name, at = found
    if name == "accelerate":
        return _accelerate_rendezvous(argv, at, env, gpus_per_node)
    return _torchrun_rendezvous(argv, at, env, gpus_per_node)


def launcher(argv: list[str]) -> tuple[str, int] | None:
    """The launcher `argv` runs, one that starts its node's processes itself (so its job runs one
    task per node), and where its own options begin: ("torchrun", 1), also for
    `python -m torch.distributed.run` (and its older `.launch`) at 3; ("accelerate", 2) for
    `accelerate launch`, 1 for `accelerate-launch`, 3 for `python -m accelerate.commands.launch`;
    else None."""
    if not argv:
        return None
    program = Path(argv[0]).name
    if program == "torchrun":
        return "torchrun", 1
    if program == "accelerate" and argv[1:2] == ["launch"]:
        return "accelerate", 2
    if program == "accelerate-launch":
        return "accelerate", 1
    if re.fullmatch(r"python[0-9.]*", program) and argv[1:2] == ["-m"]:
        module = argv[2] if len(argv) > 2 else ""
        if module in ("torch.distributed.run", "torch.distributed.launch"):
            return "torchrun", 3
        if module == "accelerate.commands.launch":
            return "accelerate", 3
    return None


def _torchrun_rendezvous(argv: list[str], at: int, env: dict[str, str], gpus_per_node: int) -> list[str]:
    """torchrun's options from `at` on: the job's nodes, one process per GPU, and a c10d rendezvous on
    the first node, unless given (a static one too: --master-addr)."""
    given = " ".join(argv[at:])
    extra = []
    if "--nnodes" not in given:
        extra.append(f"--nnodes={env.get('SLURM_NNODES', '1')}")
    if "--nproc-per-node" not in given and "--nproc_per_node" not in given:
        extra.append(f"--nproc-per-node={max(1, gpus_per_node)}")
    if "--rdzv" not in given and "--standalone" not in given and "--master" not in given:
        extra += [
            f"--rdzv-id={env.get('SLURM_JOB_ID', '0')}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={env['MASTER_ADDR']}:{env['MASTER_PORT']}",
        ]
    return [*argv[:at], *extra, *argv[at:]]


# `accelerate launch`'s options that take no value (accelerate 1.16; tests/test_accelerate.py holds
# this to the installed parser), by their underscore names; every other option takes one value.
ACCELERATE_SWITCHES = frozenset(
    "help quiet cpu multi_gpu tpu enable_cpu_affinity dynamo_use_fullgraph dynamo_use_dynamic "
    "dynamo_use_regional_compilation use_deepspeed use_fsdp use_parallelism_config use_megatron_lm "
    "same_network module no_python tpu_cluster no_tpu_cluster tpu_use_sudo downcast_bf16 "
    "fp8_use_autocast_during_eval debug".split()
)
_ACCELERATE_SHORT = {"h": "help", "q": "quiet", "m": "module", "t": "tee"}
# The options that choose how accelerate starts its processes: given one, the user chose.
_ACCELERATE_MODES = ("cpu", "multi_gpu", "tpu", "use_deepspeed", "use_fsdp", "use_megatron_lm")
_CONFIG_TYPE = re.compile(r"""^\s*["']?distributed_type["']?\s*:\s*["']?([A-Za-z_]+)""", re.MULTILINE)


def _accelerate_rendezvous(argv: list[str], at: int, env: dict[str, str], gpus_per_node: int) -> list[str]:
    """`accelerate launch` on each node: the job's processes (--num_processes counts all nodes'),
    the machines, this node's rank among them, the first node's address and port; and --multi_gpu
    where several processes are wanted and no mode is chosen. accelerate starts several processes
    (through torchrun) only in a distributed mode (--multi_gpu, --use_fsdp, ..., or a config file's
    distributed_type); else it runs ONE, unless it counts more than one GPU itself (never on a CPU
    node). Its --cpu always runs one process (or mpirun's, with --mpirun_hostfile)."""
    given = accelerate_options(argv[at:])
    nodes = env.get("SLURM_NNODES", "1")
    nodes = nodes if nodes.isdigit() else "1"
    wanted = {
        "num_processes": str(int(nodes) * max(1, gpus_per_node)),
        "num_machines": nodes,
        "machine_rank": env.get("SLURM_NODEID", "0"),
        "main_process_ip": env["MASTER_ADDR"],
        "main_process_port": env["MASTER_PORT"],
    }
    extra = [f"--{name}={value}" for name, value in wanted.items() if name not in given]
    processes = given.get("num_processes", wanted["num_processes"])
    several = processes.isdigit() and int(processes) > 1
    if several and not any(mode in given for mode in _ACCELERATE_MODES) and _multi_gpu_fits(given, env):
        extra.append("--multi_gpu")
    return [*argv[:at], *extra, *argv[at:]]


def accelerate_options(args: list[str]) -> dict[str, str]:
    """`accelerate launch`'s own options in `args` (up to the training script) by their underscore
    names (accelerate takes --num-processes and --num_processes alike), each with its value ('' for
    a switch)."""
    found: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        word, i = args[i], i + 1
        name, equals, value = word.lstrip("-").partition("=")
        name = name.replace("-", "_")
        if not word.startswith("--"):
            name = _ACCELERATE_SHORT.get(name, name)
        if not equals and name not in ACCELERATE_SWITCHES and i < len(args):
            value, i = args[i], i + 1
        found[name] = value
    return found


def _multi_gpu_fits(given: dict[str, str], env: dict[str, str]) -> bool:
    """Whether --multi_gpu goes with the accelerate config file: there is none (neither given nor
    accelerate's default), or its distributed_type is NO or MULTI_* (GPU, CPU, ...). Not with FSDP,
    DEEPSPEED or MEGATRON_LM: those start several processes themselves and --multi_gpu would
    replace them; nor with a given file not readable from here (its mode is the user's choice)."""
    if "config_file" in given:
        path = Path(given["config_file"]).expanduser()
    else:  # accelerate's default, as accelerate/commands/config/config_args.py finds it
        cache = env.get("XDG_CACHE_HOME", str(Path(env.get("HOME", "~")) / ".cache"))
        home = Path(env.get("HF_HOME", str(Path(cache) / "huggingface"))).expanduser()
        path = home / "accelerate" / "default_config.yaml"
        if not path.is_file():
            return True
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    kind = _CONFIG_TYPE.search(text)
    return kind is None or kind.group(1).upper() == "NO" or kind.group(1).upper().startswith("MULTI_")
