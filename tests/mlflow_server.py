"""A real `mlflow server` in a subprocess on a free port, for tests and the sweep benchmark."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    log: Path


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str, workdir: Path, artifacts: Path | None = None, ui: bool = False, timeout: float = 120
) -> Iterator[Server]:
    """`mlflow server` (or `mlflow ui`) with one worker on `backend_uri`; with `artifacts`, artifacts are proxied
    (`--serve-artifacts --artifacts-destination`) so clients never touch the server's disk. Stopped on exit."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "ui" if ui else "server", "--backend-store-uri", backend_uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if artifacts is not None:
        cmd += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"mlflow-server-{port}.log"
    with open(log, "w") as out:
        # cwd: where a store without an artifact root would put `mlruns/`
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited early: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer within {timeout:.0f} s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield Server(url, proc.pid, log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
