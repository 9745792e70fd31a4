"""A plain Lightning script under `--gpus 2` on minidelta (issue 34): one srun task per GPU, and
Lightning's SLURMEnvironment (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_NODEID) sees the
same world as the RANK, LOCAL_RANK and WORLD_SIZE deltajobs' task wrapper gives the program. The
script trains with DDP on CPU (minidelta's GPUs are gres, not devices), Trainer(devices=2) matching
the job's 2 tasks per node, so `submit` says nothing about it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from slurmutil import cli, needs_slurm, wait_for_state

pytestmark = [
    needs_slurm,
    pytest.mark.slurm,
    # find_spec, not importorskip: importing Lightning here would cost seconds and it runs in the job.
    pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="lightning is not installed"),
]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}

FIT = """\
import json, os
import torch
import lightning as L


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
trainer = L.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
    default_root_dir=os.environ["DELTAJOBS_CHECKPOINT_DIR"],
    enable_progress_bar=False, logger=False, enable_model_summary=False,
)
trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
seen = {
    "global_rank": trainer.global_rank, "local_rank": trainer.local_rank,
    "world_size": trainer.world_size, "node_rank": trainer.node_rank,
    "environment": type(trainer.strategy.cluster_environment).__name__,
    **{name: os.environ.get(name) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID")},
}
with open(os.path.join(os.environ["DELTAJOBS_RUN_DIR"], f"ranks-{trainer.global_rank}.json"), "w") as out:
    json.dump(seen, out)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    return tmp_path


def test_lightning_ranks_match_the_wrappers_under_gpus_2(project: Path) -> None:
    (project / "fit.py").write_text(FIT)
    proc = cli("submit", "fit.py", "--gpus", "2", "--time", "00:05:00", "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # Trainer(devices=2) agrees with --gpus 2
    sub = json.loads(proc.stdout)
    script = (Path(sub["run_dir"]) / "job.sh").read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "#SBATCH --gpus-per-node=2" in script
    row = wait_for_state(sub["job_id"], FINAL, timeout=180)
    assert row["state"] == "COMPLETED", cli("logs", sub["job_id"], "--err").stdout[-3000:]
    ranks = [json.loads(p.read_text()) for p in sorted(Path(sub["run_dir"]).glob("ranks-*.json"))]
    assert [r["global_rank"] for r in ranks] == [0, 1], ranks
    for r in ranks:
        assert r["environment"] == "SLURMEnvironment"
        assert r["global_rank"] == r["local_rank"] == int(r["RANK"]) == int(r["LOCAL_RANK"]) == int(r["SLURM_PROCID"])
        assert r["world_size"] == int(r["WORLD_SIZE"]) == 2 and r["node_rank"] == 0
