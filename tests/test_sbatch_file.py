"""An existing sbatch script read as sbatch(1) reads it, mapped onto a job spec, and linted; no SLURM."""

from __future__ import annotations

import pytest

from deltajobs.clusters.units import parse_walltime
from deltajobs.errors import SpecError
from deltajobs.payloads.sbatch_file import (
    KNOWN_OPTIONS,
    SHORT_OPTIONS,
    Directive,
    normalize_time,
    parse_sbatch,
    passthrough,
    split_options,
    to_spec_dict,
)
from deltajobs.payloads.sbatch_lint import Finding, lint
from deltajobs.schema import from_dict
from deltajobs.spec.resolve import JobSpec

# The course's script, verbatim.
COURSE = """\
#!/bin/bash
#SBATCH --account=bgvu-delta-gpu
#SBATCH --partition=gpuA100x4
#SBATCH --nodes=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=16g
#SBATCH --time=00:05:00
#SBATCH --job-name=mnist_train
#SBATCH --output=mnist_%j.out

module purge
module reset
module load pytorch-conda/2.8

nvidia-smi && python train_mnist.py
"""
HEAD = "#!/bin/bash\n#SBATCH --account=bgvu-delta-gpu --time=00:10:00\n"


def script(*lines: str, head: str = HEAD) -> str:
    return head + "".join(line + "\n" for line in lines)


def resources(*lines: str) -> dict[str, object]:
    return to_spec_dict(parse_sbatch(script(*lines)))["resources"]


def messages(text: str, level: str | None = None) -> list[str]:
    return [f.message for f in lint(parse_sbatch(text)) if level in (None, f.level)]


def test_the_course_script_maps_onto_the_course_job() -> None:
    parsed = parse_sbatch(COURSE, "train_mnist.sbatch")
    assert parsed.shebang == "#!/bin/bash"
    assert parsed.first_command_line == 12
    assert parsed.late == []
    assert parsed.directives[0] == Directive("account", "bgvu-delta-gpu", 2, "--account=bgvu-delta-gpu")
    spec = to_spec_dict(parsed)
    assert spec["name"] == "mnist_train"
    assert spec["account"] == "bgvu-delta-gpu"
    assert spec["resources"] == {
        "partition": "gpuA100x4",
        "nodes": 1,
        "gpus_per_node": 1,
        "tasks_per_node": 1,
        "cpus_per_task": 1,
        "mem": "16g",
        "time": "00:05:00",
    }
    assert "schedule" not in spec
    assert lint(parsed) == []  # an account, a time, one task: python without srun is right
    assert [d.option for d in passthrough(parsed)] == ["output"]
    job = from_dict(JobSpec, spec)
    assert (job.name, job.account, job.resources.mem_mb, job.resources.seconds) == (
        "mnist_train",
        "bgvu-delta-gpu",
        16384,
        300,
    )


def test_short_options_and_several_per_line() -> None:
    text = script(
        "#SBATCH -p gpuA40x4 -N1 -t 90 -J short --mem 32G  # a comment: --gpus-per-node=4 is ignored",
        "#SBATCH -n 4 -c 2 -G 2",
        "#SBATCH -C projects -q normal -d afterok:12 -w gpua001 -x gpua002 -o out.log -e err.log -A acct-delta-gpu",
    )
    parsed = parse_sbatch(text)
    spec = to_spec_dict(parsed)
    assert spec["name"] == "short"
    assert spec["account"] == "acct-delta-gpu"  # the later directive wins, as in sbatch
    assert spec["resources"] == {
        "partition": "gpuA40x4",
        "nodes": 1,
        "gpus_per_node": 2,
        "tasks_per_node": 4,
        "cpus_per_task": 2,
        "mem": "32G",
        "time": "01:30:00",
        "constraint": "projects",
    }
    assert spec["schedule"] == {"dependency": "afterok:12", "qos": "normal", "exclude": "gpua002"}
    assert [(d.option, d.value) for d in passthrough(parsed)] == [
        ("nodelist", "gpua001"),
        ("output", "out.log"),
        ("error", "err.log"),
    ]
    assert [d.text for d in parsed.directives[2:5]] == ["-p gpuA40x4", "-N1", "-t 90"]
    assert from_dict(JobSpec, spec).resources.tasks_per_node == 4


def test_short_table_names_known_long_options() -> None:
    assert set(SHORT_OPTIONS.values()) <= set(KNOWN_OPTIONS)
    assert SHORT_OPTIONS["G"] == "gpus" and SHORT_OPTIONS["N"] == "nodes"


def test_getopt_rules_grouped_flags_quotes_and_abbreviations() -> None:
    found = split_options(["-HN2", "--comment", "two words", "--part=gpuA40x4", "--tasks-per-node=2"], 5)
    assert [(d.option, d.value) for d in found] == [
        ("hold", None),
        ("nodes", "2"),
        ("comment", "two words"),
        ("partition", "gpuA40x4"),  # a unique prefix, as getopt_long takes it
        ("ntasks-per-node", "2"),  # sbatch's alias
    ]
    parsed = parse_sbatch(script("#SBATCH --comment='a # b' --mem=1G#an unquoted hash ends the line"))
    assert [(d.option, d.value) for d in parsed.directives[2:]] == [("comment", "a # b"), ("mem", "1G")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", "00:05:00"),  # MM
        ("90", "01:30:00"),
        ("5:30", "00:06:00"),  # MM:SS; SLURM rounds up to whole minutes
        ("10:00", "00:10:00"),
        ("00:05:00", "00:05:00"),  # HH:MM:SS
        ("48:00:00", "48:00:00"),
        ("0:90:00", "01:30:00"),  # SLURM does not cap the fields
        ("2-12", "2-12:00:00"),  # D-HH
        ("1-02:30", "1-02:30:00"),  # D-HH:MM
        ("1-02:30:15", "1-02:31:00"),  # D-HH:MM:SS
        ("0-30", "1-06:00:00"),
    ],
)
def test_every_sbatch_time_form(text: str, expected: str) -> None:
    assert normalize_time(text) == expected
    parse_walltime(expected)  # what deltajobs reads


@pytest.mark.parametrize("text", ["abc", "1:2:3:4", "5m", "1-2-3", "", "INFINITE", "UNLIMITED", "-1", "0", "00:00"])
def test_a_walltime_that_does_not_parse_names_the_field(text: str) -> None:
    with pytest.raises(SpecError) as err:
        normalize_time(text)
    assert err.value.field == "time"
    assert "MM:SS" in str(err.value)


def test_a_bad_walltime_is_a_lint_error_on_its_line() -> None:
    text = script("#SBATCH --time=1:2:3:4", head="#!/bin/bash\n#SBATCH -A acct-delta-gpu\n")
    errors = messages(text, "error")
    assert errors == [
        "line 3: --time: '1:2:3:4' is not an sbatch walltime; use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
    ]


def test_a_directive_after_the_first_command_is_late() -> None:
    text = script("", "module load cuda", "#SBATCH --mem=64g --nodes=2", "python train.py")
    parsed = parse_sbatch(text)
    assert parsed.first_command_line == 4
    assert [(d.option, d.line) for d in parsed.late] == [("mem", 5), ("nodes", 5)]
    assert "mem" not in to_spec_dict(parsed)["resources"]  # sbatch ignores it, so do we
    assert messages(text) == [
        "line 5: #SBATCH after the first command (line 4) is ignored by sbatch; move it up",
    ]


def test_an_unknown_option_is_an_error_with_the_nearest_valid_one() -> None:
    text = script("#SBATCH --partition=gpuA100x4", "#SBATCH --gpu-per-node=2")
    parsed = parse_sbatch(text)
    assert Finding("error", 4, "line 4: --gpu-per-node is not an sbatch option; did you mean --gpus-per-node?") in (
        lint(parsed)
    )
    assert "gpu-per-node" not in [d.option for d in passthrough(parsed)]
    assert to_spec_dict(parsed)["resources"]["gpus_per_node"] == 0


def test_ambiguous_prefixes_stray_words_and_missing_values_are_errors() -> None:
    text = script("#SBATCH --cpus=4 --exclusive user", "#SBATCH --mem", "#SBATCH --time --hold=yes -Z")
    assert messages(text, "error") == [
        "line 3: --cpus is ambiguous to sbatch: --cpus-per-gpu, --cpus-per-task",
        "line 3: 'user' is not an option; sbatch stops at it (Invalid directive)",
        "line 4: --mem needs a value",
        "line 5: --time needs a value",
        "line 5: --hold takes no value",
        "line 5: -Z is not an sbatch option",
    ]


def test_a_script_without_a_shebang_is_refused() -> None:
    text = "#SBATCH --account=bgvu-delta-gpu\n#SBATCH --time=5\npython train.py\n"
    parsed = parse_sbatch(text)
    assert parsed.shebang is None
    assert lint(parsed) == [Finding("error", 1, "line 1: sbatch refuses a script without #! on its first line")]


def test_dos_line_breaks_and_unmatched_quotes_are_refused() -> None:
    assert messages(COURSE.replace("\n", "\r\n"), "error") == [
        "line 1: sbatch refuses DOS line breaks (\\r\\n); run dos2unix on it"
    ]
    assert messages(script("#SBATCH --comment='open"), "error") == [
        "line 3: unmatched quote: sbatch stops at this #SBATCH line"
    ]


@pytest.mark.parametrize(
    ("lines", "gpus"),
    [
        (["#SBATCH --gres=gpu:2"], 2),
        (["#SBATCH --gres=gpu:a100:3"], 3),
        (["#SBATCH --gres=gpu"], 1),
        (["#SBATCH --gpus=2"], 2),
        (["#SBATCH -G a100:4"], 4),
        (["#SBATCH --gpus-per-node=a100:4"], 4),
        (["#SBATCH --gpus-per-task=1 --ntasks-per-node=4"], 4),
        (["#SBATCH --nodes=2 --ntasks=8 --gpus-per-task=1"], 4),
        ([], 0),
    ],
)
def test_gpu_forms(lines: list[str], gpus: int) -> None:
    assert resources(*lines)["gpus_per_node"] == gpus


def test_gpus_in_all_over_several_nodes_are_refused() -> None:
    assert messages(script("#SBATCH --nodes=2 --gpus=8"), "error") == [
        "line 3: --gpus: '8' GPUs in all may land unevenly on 2 nodes; use --gpus-per-node"
    ]


@pytest.mark.parametrize(
    ("lines", "mem"),
    [
        (["#SBATCH --mem-per-cpu=2G --cpus-per-task=4 --ntasks-per-node=2"], "16G"),  # 2G x 4 x 2
        (["#SBATCH --mem-per-cpu=1000 -c 3"], "3000M"),  # megabytes when bare
        (["#SBATCH --mem-per-cpu=1.5G -c 3"], "4608M"),
        (["#SBATCH --mem-per-gpu=40G --gpus-per-node=2"], "80G"),
        (["#SBATCH --mem=500M"], "500M"),
        (["#SBATCH --mem=16000"], "16000"),  # SLURM's text, kept
    ],
)
def test_memory_is_per_node(lines: list[str], mem: str) -> None:
    assert resources(*lines)["mem"] == mem


def test_memory_options_are_exclusive_and_per_gpu_needs_gpus() -> None:
    assert messages(script("#SBATCH --mem=8G", "#SBATCH --mem-per-cpu=2G"), "error") == [
        "line 4: sbatch refuses two of --mem, --mem-per-cpu, --mem-per-gpu"
    ]
    assert messages(script("#SBATCH --mem-per-gpu=8G"), "error") == [
        "line 3: --mem-per-gpu: needs GPUs; add --gpus-per-node or use --mem"
    ]


def test_tasks_nodes_requeue_signal_and_exclusive() -> None:
    res = resources("#SBATCH --nodes=2 --ntasks=8 --no-requeue --signal=B:USR1@300 --exclusive")
    assert (res["nodes"], res["tasks_per_node"], res["max_requeues"]) == (2, 4, 0)
    assert (res["signal_grace"], res["exclusive"]) == (300, True)
    assert resources("#SBATCH --signal=USR1")["signal_grace"] == 60  # SLURM's default warning
    assert "signal_grace" not in resources("#SBATCH --signal=USR1@5")  # below deltajobs' 10 s
    assert "max_requeues" not in resources("#SBATCH --no-requeue --requeue")  # the last one wins
    parsed = parse_sbatch(script("#SBATCH --exclusive=user"))
    assert "exclusive" not in to_spec_dict(parsed)["resources"]
    assert [d.text for d in passthrough(parsed)] == ["--exclusive=user"]
    assert resources("#SBATCH --nodes=2-4")["nodes"] == 4  # MIN-MAX: the most it may be charged for
    assert (resources("#SBATCH --nodes=2 --ntasks=5")["tasks_per_node"]) == 3  # 3 + 2: the busiest node
    assert resources("#SBATCH --ntasks=1 --ntasks-per-node=16")["tasks_per_node"] == 1  # per node is a cap
    assert messages(script("#SBATCH --nodes=4-2"), "error") == [
        "line 3: --nodes: '4-2' is not a whole number from 1; use N or MIN-MAX"
    ]


def test_the_name_defaults_to_the_file_name() -> None:
    assert to_spec_dict(parse_sbatch(script(), "/home/me/my job (v2).sh"))["name"] == "my_job__v2"
    assert to_spec_dict(parse_sbatch(script()))["name"] == "script"
    assert to_spec_dict(parse_sbatch(script("#SBATCH -J 'my run'")))["name"] == "my_run"


def test_no_account_and_no_time_are_the_clusters_to_judge() -> None:
    """sbatch takes a script without --account or --time: what they default to is the cluster's, so
    `sbatch_request.check_request` warns of them (tests/test_check_real_shapes.py), not lint."""
    assert messages("#!/bin/bash\n#SBATCH -p gpuA100x4 --gpus-per-node=1\npython x.py\n") == []


def test_array_scripts_are_read_as_sbatch_reads_them() -> None:
    parsed = parse_sbatch(script("#SBATCH --array=0-9"))
    assert messages(script("#SBATCH --array=0-9"), "error") == []  # sbatch accepts it; check prices it
    assert [d.option for d in passthrough(parsed)] == ["array"]


def test_near_miss_directives_are_comments_to_sbatch() -> None:
    text = script("# SBATCH --mem=64g", "#sbatch --nodes=2", "  #SBATCH --gpus-per-node=2", "##SBATCH --qos=x")
    assert messages(text) == [
        f"line {n}: sbatch reads this as a comment: write #SBATCH in column one" for n in (3, 4, 5)
    ]
    assert [d.option for d in parse_sbatch(text).directives] == ["account", "time"]


def test_conda_activate_in_the_body_is_warned() -> None:
    text = script("source ~/.bashrc", "conda activate torch", "source activate torch", "# conda activate x")
    assert messages(text) == [
        f"line {n}: NCSA: submit from within the activated environment instead of `conda activate` in a batch script"
        for n in (4, 5)
    ]


def test_python_without_srun_runs_once_when_there_are_several_tasks() -> None:
    warning = "runs python once, not once per task: prefix with srun"
    body = ["module load cuda", "cd run && OMP_NUM_THREADS=1 python3 train.py"]
    # clear evidence: one task per GPU (a DDP layout) or several nodes, and nothing starts the tasks
    assert messages(script("#SBATCH --ntasks-per-node=2 --gpus-per-node=2", *body)) == [f"line 5: {warning}"]
    assert messages(script("#SBATCH --nodes=2", "/usr/bin/python train.py | tee log")) == [f"line 4: {warning}"]
    assert messages(script("#SBATCH --ntasks-per-node=2", "srun python train.py", "srun torchrun x.py")) == []
    assert messages(script("python train.py")) == []  # one task: python runs once, as meant
    # no clear evidence: a helper beside the srun that starts the tasks; tasks as cores for one program
    assert messages(script("#SBATCH --nodes=2", "python prepare.py", "srun python train.py")) == []
    assert messages(script("#SBATCH --ntasks=16", "python pool.py --workers 16")) == []


def test_late_directives_do_not_count_as_commands_and_comments_do_not_end_the_header() -> None:
    text = "#!/bin/bash\n\n# set up\n   # indented comment\n#SBATCH -t 5 -A a-delta-gpu\n\necho go\n"
    parsed = parse_sbatch(text)
    assert (parsed.first_command_line, [d.option for d in parsed.directives]) == (7, ["time", "account"])
    assert parse_sbatch("#!/bin/bash\n#SBATCH -t 5\n").first_command_line is None
