"""Training across nodes: two `torchrun` agents, one process each, as two machines would start them (here both on
localhost, each with its own run folder, cache and store — no disk in common). Both ranks end with rank 0's
supernet checkpoint, byte for byte (`ofa_runtime.share_checkpoint`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env
from mlflow_server import free_port

pytestmark = pytest.mark.slow


def test_torchrun_on_two_nodes_trains_one_supernet(tmp_path: Path) -> None:
    port = free_port()
    torchrun = Path(sys.executable).with_name("torchrun")
    procs = []
    for rank in (0, 1):
        node = tmp_path / f"node{rank}"
        cmd = [str(torchrun), "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}", "--master_addr=127.0.0.1"]
        cmd += [f"--master_port={port}", "-m", "tinyflow", "stages=[space,train]", "debug=fast", "data=mnist5k"]
        cmd += ["space.resolutions=[32]", "trainer.strategy=ddp", "trainer.num_nodes=2", "trainer.devices=1"]
        cmd += [f"tracking.uri=sqlite:///{node / 'mlflow.db'}", f"hydra.run.dir={node / 'run'}"]
        cmd += [f"cache.dir={node / 'cache'}"]
        procs.append(
            subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"node {rank}: {out[-3000:]}"
    logs = [(tmp_path / f"node{r}" / "run" / "tinyflow.log").read_text() for r in (0, 1)]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1]
    ckpts = [(tmp_path / f"node{r}" / "run" / "train" / "supernet.ckpt").read_bytes() for r in (0, 1)]
    assert ckpts[0] == ckpts[1]
