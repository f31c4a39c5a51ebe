"""Behaviour suites for data modules and trackers, and a tracker that records every call (written only to the
`Tracker` Protocol, inheriting nothing: what it receives is what any tracker receives)."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinyflow.contracts import DataModule, Tracker
from tinyflow.plugins import check_protocol


# ---------------------------------------------------------------- data module
def check_data_module(data: DataModule, resolution: int = 16, batches: int = 1) -> None:
    """Batches of the declared channels, resolution and classes from every split; a calibration batch."""
    check_protocol(data, "data", type(data).__name__)
    data.set_resolution(resolution)
    data.setup()
    c, k = int(data.in_channels), int(data.num_classes)
    assert c >= 1 and k >= 2, f"in_channels {c} must be >= 1 and num_classes {k} >= 2"
    loaders = {
        "train": data.train_dataloader(),
        "val": data.val_dataloader(),
        "test": data.test_dataloader(),
        "loader(val)": data.loader("val"),
    }
    for name, loader in loaders.items():
        for i, (x, y) in enumerate(loader):
            assert tuple(x.shape[1:]) == (c, resolution, resolution), f"{name}: batch {tuple(x.shape)}"
            assert len(y) == len(x) and int(y.min()) >= 0 and int(y.max()) < k, f"{name}: labels outside [0, {k})"
            assert bool(x.isfinite().all()), f"{name}: non-finite pixels"
            if i + 1 >= batches:
                break
        else:
            raise AssertionError(f"{name}: the loader yields no batch")
    calib = data.calibration_batch(4)
    assert tuple(calib.shape) == (min(4, len(calib)), c, resolution, resolution), f"calibration {tuple(calib.shape)}"


# ---------------------------------------------------------------- tracker
class RecordingTracker:
    """Records every call as `(method, args)` in `calls`; with `path`, writes them as JSON when the job ends."""

    def __init__(self, path: str | None = None):
        self.path = path
        self.calls: list[tuple[str, Any]] = []
        self.parent_id: str | None = None

    def _rec(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))

    def prepare(self) -> None:
        self._rec("prepare")

    @contextlib.contextmanager
    def job(self, cfg: Any, tags: dict[str, str]) -> Iterator[RecordingTracker]:
        self.parent_id = "recording"
        self._rec("job", dict(tags))
        try:
            yield self
        finally:
            self._rec("job_end")
            self.parent_id = None
            if self.path:
                Path(self.path).write_text(json.dumps(self.calls, default=str))

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[RecordingTracker]:
        self._rec("stage", name)
        try:
            yield self
        finally:
            self._rec("stage_end", name)

    def log_params(self, params: dict[str, Any]) -> None:
        self._rec("log_params", dict(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._rec("log_metrics", dict(metrics), step)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._rec("log_artifact", str(path), artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        self._rec("log_figure", name)

    def log_text(self, text: str, name: str) -> None:
        self._rec("log_text", name)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._rec("set_tags", dict(tags))

    def log_parent_metrics(self, metrics: dict[str, float]) -> None:
        self._rec("log_parent_metrics", dict(metrics))

    def log_onnx_model(self, path: str, name: str = "model") -> None:
        self._rec("log_onnx_model", str(path), name)


def check_tracker(tracker: Tracker, cfg: Any = None) -> None:
    """A job with two stages and every logging call, with the tracker activated as the pipeline does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyflow.tracking import activate, active_tracker

    check_protocol(tracker, "tracking", type(tracker).__name__)
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "note.txt"
        artifact.write_text("tinyflow conformance\n")
        fig = plt.figure()
        tracker.prepare()
        with activate(tracker), tracker.job(cfg, {"run_name": "conformance", "stages": "one,two"}):
            assert active_tracker() is tracker, "active_tracker() is not the activated tracker"
            for name in ("one", "two"):
                with tracker.stage(name):
                    t = active_tracker()
                    t.log_params({"stage": name, "nested": {"a": 1}})
                    t.log_metrics({"x": 1.0, "y": 2.5}, step=0)
                    t.log_metrics({"x": 2.0}, step=1)
                    t.log_text("hello", f"{name}.txt")
                    t.log_artifact(str(artifact))
                    t.log_figure(fig, f"{name}.png")
            tracker.set_tags({"status": "ok"})
            tracker.log_parent_metrics({"score": 0.5})
        plt.close(fig)
    assert active_tracker() is not tracker, "the tracker stays active after its block"


# ---------------------------------------------------------------- device
def check_device(device: Any) -> None:
    """Budgets are positive and within the part's totals (the reserves are non-negative); a clock to time with."""
    assert 0 < device.sram_budget_bytes <= device.sram_total_bytes, f"{device.name}: SRAM budget outside (0, total]"
    assert 0 < device.flash_budget_bytes <= device.flash_total_bytes, f"{device.name}: flash budget outside (0, total]"
    assert device.clock_mhz > 0, f"{device.name}: clock_mhz must be positive"


# ---------------------------------------------------------------- trainer
def check_trainer(trainer: Any, data: DataModule, workdir: str, space: Any = None) -> Any:
    """`training_space` gives a space of the same kind; `fit` on a tiny space returns a `TrainResult` whose
    checkpoint exists, a model result with its network description. Returns the result."""
    from tinyflow.contracts import TrainResult
    from tinyflow.network import DeployedNetwork
    from tinyflow.testing.suites import tiny_space

    check_protocol(trainer, "trainer", type(trainer).__name__)
    space = (space or tiny_space()).bind(data)
    trained = trainer.training_space(space)
    assert trained.resolution == space.resolution, "training_space must keep the space's resolution"
    result = trainer.fit(space, data, workdir, RecordingTracker())
    assert isinstance(result, TrainResult), f"fit() returned {type(result).__name__}, not a TrainResult"
    assert Path(result.checkpoint).is_file(), f"the checkpoint {result.checkpoint} does not exist"
    assert all(isinstance(v, int | float) for v in result.metrics.values()), "metrics must be numbers"
    if result.kind == "model":
        assert result.network is not None, "a model result carries its network description"
        DeployedNetwork.from_dict(result.network)
    return result
