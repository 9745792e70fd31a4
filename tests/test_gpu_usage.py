"""GPU utilisation sampled inside a job (a fake nvidia-smi on PATH) and the advice it leads to."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from test_charge_advice import DELTA, job

from deltajobs.charge.advice import gpu_advice
from deltajobs.injob.gpu_usage import GPU_FILE, GpuSampler, parse_query, read_samples, run_gpu_summary, summarize
from deltajobs.jobs.lifecycle import right_sizing
from deltajobs.registry.schema import JobRow

# 4 GPUs of which one trains, busy 9% of the time (what `--query-gpu=index,utilization.gpu,memory.used` prints)
FAKE_CSV = "0, 9, 5120\n1, 0, 1\n2, 0, 1\n3, 0, 1\n"


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `nvidia-smi` first on PATH that prints FAKE_CSV and records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/nvidia-smi.args\ncat <<EOF\n{FAKE_CSV}EOF\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_parse_query_skips_what_it_cannot_read() -> None:
    assert parse_query("0, 87, 40000\n1, [N/A], 3\n\n") == [[0.0, 87.0, 40000.0]]


def test_sampler_writes_readings_and_a_summary(fake_nvidia_smi: Path, tmp_path: Path) -> None:
    path = tmp_path / GPU_FILE
    with GpuSampler(path, interval=0.05) as sampler:
        time.sleep(0.3)
    args = (fake_nvidia_smi / "nvidia-smi.args").read_text().splitlines()[0]
    assert args == "--query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits"
    samples = read_samples(path)
    assert len(samples) >= 2 and samples == sampler.samples
    assert json.loads(path.read_text().splitlines()[0])["gpus"][0] == [0.0, 9.0, 5120.0]
    summary = sampler.summary()
    assert summary == {
        "samples": len(samples),
        "gpus": 4,
        "busy_gpus": 1,
        "mean_util": 9.0,
        "per_gpu_util": [9.0, 0.0, 0.0, 0.0],
        "peak_memory_mb": 5120.0,
    }


def test_no_nvidia_smi_no_thread_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with GpuSampler(tmp_path / GPU_FILE, interval=0.01) as sampler:
        pass
    assert sampler.thread is None and not (tmp_path / GPU_FILE).exists() and sampler.summary() is None


def test_advice_from_gpu_utilisation_is_priced() -> None:
    gpu = summarize([parse_query(FAKE_CSV)])
    record = job(gpus=4, cpus=16, mem="16G")
    advice = gpu_advice(gpu, 4, record, DELTA.partition("gpuA100x4"))
    assert [a.option for a in advice] == ["--gpus 1", ""]
    assert advice[0].message == "4 GPUs reserved, 1 used: --gpus 1 would cut the charge by 75% (4.0 -> 1.0 SU)"
    assert advice[1].message.startswith("GPU busy 9% of the time: the input pipeline or the host is the bottleneck")


def test_a_well_fed_gpu_gets_no_advice_and_an_idle_one_does() -> None:
    assert gpu_advice(summarize([[[0, 93, 30000]]]), 1) == []
    assert gpu_advice(None, 1) == []
    idle = gpu_advice(summarize([[[0, 0, 1]]]), 1)
    assert [a.message for a in idle] == [
        "1 GPU reserved, 0 used (the job trained on the CPU? see train.device): --gpus 1"
    ]


def test_results_advice_reads_the_run_directory(tmp_path: Path) -> None:
    """`results` and `status --detail` take the GPU summary from results.json (else gpu_util.jsonl)."""
    (tmp_path / GPU_FILE).write_text(json.dumps({"time": 1.0, "gpus": parse_query(FAKE_CSV)}) + "\n")
    assert run_gpu_summary(tmp_path)["busy_gpus"] == 1  # type: ignore[index]
    (tmp_path / "results.json").write_text(json.dumps({"gpu_util": {"samples": 3, "busy_gpus": 4, "mean_util": 95}}))
    assert run_gpu_summary(tmp_path) == {"samples": 3, "busy_gpus": 4, "mean_util": 95}
    (tmp_path / "results.json").unlink()
    row = JobRow("4412031", "mnist", "delta", "slurm", str(tmp_path), "", "", 0.0, "COMPLETED", gpus_per_node=4)
    options = [a.option for a in right_sizing(row, job(gpus=4, cpus=16, mem="16G", busy_cpus=1.0))]
    assert "--gpus 1" in options and "" in options
