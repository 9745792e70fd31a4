"""Job specs: layering, typed overrides and every validation rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deltajobs.errors import SpecError
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings, write_user_config


def resolve(cluster: str = "delta", **overrides: object):
    sets = overrides.pop("sets", [])
    return resolve_job("mnist", Overrides(sets=list(sets), **overrides), load_settings(), cluster)  # type: ignore[arg-type]


def test_mnist_spec_is_the_course_job() -> None:
    job = resolve(account="bgvu-delta-gpu")
    res, train = job.spec.resources, job.spec.train
    assert job.spec.name == "mnist_train"
    assert (res.partition, res.nodes, res.gpus_per_node, res.cpus_per_task) == ("gpuA100x4", 1, 1, 1)
    assert (res.mem, res.time) == ("16G", "00:05:00")
    assert (train.model, train.optimizer, train.lr, train.batch_size, train.epochs) == ("mlp", "adamw", 1e-3, 64, 10)
    assert job.modules == ["pytorch-conda/2.8"]


def test_layering_defaults_config_env_spec_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # built-in default: no account, data under DELTAJOBS_HOME
    job = resolve_job("mnist", None, load_settings(), "delta", require_account=False)
    assert job.spec.account is None
    assert job.spec.train.data_root.endswith("state/data")
    # user config beats defaults
    write_user_config({"account": "cfgx-delta-gpu", "data_root": "/cfg/data"})
    job = resolve()
    assert (job.spec.account, job.spec.train.data_root) == ("cfgx-delta-gpu", "/cfg/data")
    # environment beats the user config
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "envx-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_DATA_ROOT", "/env/data")
    job = resolve()
    assert (job.spec.account, job.spec.train.data_root) == ("envx-delta-gpu", "/env/data")
    # the job spec beats the environment
    spec = yaml.safe_load((Path(__file__).parent.parent / "jobs" / "mnist.yaml").read_text())
    spec["account"] = "spec-delta-gpu"
    spec["train"]["data_root"] = "/spec/data"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(spec))
    job = resolve_job(str(path), None, load_settings(), "delta")
    assert (job.spec.account, job.spec.train.data_root) == ("spec-delta-gpu", "/spec/data")
    # flags beat the spec
    job = resolve_job(
        str(path), Overrides(account="flag-delta-gpu", sets=["train.data_root=/flag"]), load_settings(), "delta"
    )
    assert (job.spec.account, job.spec.train.data_root) == ("flag-delta-gpu", "/flag")


def test_set_is_typed_by_the_schema() -> None:
    job = resolve(
        account="bgvu-delta-gpu",
        sets=["train.epochs=3", "train.lr=0.01", "resources.mem=32G", "resources.exclusive=true"],
    )
    assert job.spec.train.epochs == 3 and isinstance(job.spec.train.epochs, int)
    assert job.spec.train.lr == 0.01
    assert job.spec.resources.mem == "32G"
    assert job.spec.resources.exclusive is True
    job = resolve(account="bgvu-delta-gpu", sets=["environment.modules=[a/1, b/2]", "train.model_args.hidden=[32]"])
    assert job.spec.environment.modules == ["a/1", "b/2"]
    assert job.spec.train.model_args == {"hidden": [32]}


BAD = [
    ({"partition": "gpuA100"}, "resources.partition", "choose one of: gpuA100x4"),
    ({"gpus": 5}, "resources.gpus_per_node", "choose 1 to 4"),
    ({"gpus": 0}, "resources.gpus_per_node", "choose 1 to 4"),
    ({"partition": "cpu", "account": "bgvu-delta-cpu"}, "resources.gpus_per_node", "must be 0"),
    ({"cpus": 65}, "resources.cpus_per_task", "the node has 64"),
    ({"cpus": 0}, "resources.cpus_per_task", "below the minimum 1"),
    ({"mem": "300G"}, "resources.mem", "at most 230G"),  # NCSA: --mem gets 5-10% less than 256 GB
    ({"mem": "lots"}, "resources.mem", "not a memory size"),
    ({"mem": "0"}, "resources.mem", "exclusive"),
    ({"time": "49:00:00"}, "resources.time", "48:00:00"),
    ({"time": "1h"}, "resources.time", "HH:MM:SS"),
    ({"time": "02:00:00", "partition": "gpuA100x4-interactive"}, "resources.time", "01:00:00"),
    ({"nodes": 5, "partition": "gpuA100x4-interactive"}, "resources.nodes", "choose 1 to 4"),
    ({"nodes": -1}, "resources.nodes", "below the minimum 1"),
    ({"account": "bgvu-delta-cpu"}, "account", "use bgvu-delta-gpu"),
    ({"account": "Not An Account"}, "account", "does not match"),
    ({"sets": ["train.epochs=0"]}, "train.epochs", "below the minimum 1"),
    ({"sets": ["train.epochs=ten"]}, "train.epochs", "expected an integer"),
    ({"sets": ["train.lr=-1"]}, "train.lr", "greater than 0"),
    ({"sets": ["train.model=nope"]}, "train.model", "choose one of: mlp, cnn"),
    ({"sets": ["train.optimizer=adagrad"]}, "train.optimizer", "choose one of: sgd"),
    ({"sets": ["train.bogus=1"]}, "train.bogus", "unknown key"),
    ({"sets": ["resources.gpu=1"]}, "resources.gpu", "unknown key; valid keys: partition"),
    ({"sets": ["name=x$(touch canary)"]}, "name", "does not match"),
    ({"sets": ["environment.modules=[a;b]"]}, "environment.modules[0]", "does not match"),
    ({"sets": ["environment.env={'A B': x}"]}, "environment.env.A B", "does not match"),
    ({"sets": ["resources.constraint=scratch;rm"]}, "resources.constraint", "does not match"),
    ({"sets": ["resources.signal_grace=600"]}, "resources.signal_grace", "shorter than the walltime"),
    (
        {"sets": ["resources.tasks_per_node=3", "resources.gpus_per_node=2"]},
        "resources.tasks_per_node",
        "choose 1 or 2",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "hint"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_validation_names_field_and_choices(overrides: dict, field: str, hint: str) -> None:
    overrides = {"account": "bgvu-delta-gpu", **overrides}
    with pytest.raises(SpecError) as err:
        resolve(**overrides)
    assert err.value.field == field
    assert hint in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_account_says_how_to_set_it() -> None:
    with pytest.raises(SpecError, match="DELTAJOBS_ACCOUNT"):
        resolve()


def test_unknown_job_and_cluster_list_choices(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="choose one of: .*mnist"):
        resolve_job("nope", None, load_settings(), "delta")
    with pytest.raises(SpecError, match="choose one of: delta, deltaai, minidelta"):
        resolve(cluster="mars")
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        resolve_job(str(bad), None, load_settings(), "delta")


def test_whole_node_and_cpu_jobs_validate() -> None:
    job = resolve(account="bgvu-delta-gpu", sets=["resources.exclusive=true", "resources.mem=0"], gpus=4, cpus=16)
    assert job.spec.resources.ntasks_per_node == 4
    job = resolve(account="bgvu-delta-cpu", partition="cpu", gpus=0, cpus=128)
    assert job.partition.kind == "cpu"
