"""The pipeline activates the tracker; plugins are checked against every member of their Protocol."""

from __future__ import annotations

import pytest

from tinyflow.contracts import PROTOCOLS, iter_protocol_members
from tinyflow.errors import ConfigError
from tinyflow.plugins import check_protocol
from tinyflow.testing import RecordingTracker
from tinyflow.tracking import NullTracker, activate, active_tracker


def test_active_tracker_is_the_activated_one_and_only_inside() -> None:
    outer, inner = RecordingTracker(), RecordingTracker()
    assert isinstance(active_tracker(), NullTracker)
    with activate(outer):
        assert active_tracker() is outer
        with activate(inner):
            assert active_tracker() is inner
        assert active_tracker() is outer
    assert isinstance(active_tracker(), NullTracker)


def test_a_job_alone_does_not_activate_a_tracker() -> None:
    tracker = RecordingTracker()
    with tracker.job(None, {}):
        assert active_tracker() is not tracker  # trackers never push themselves anywhere


def test_activation_ends_when_the_block_raises() -> None:
    tracker = RecordingTracker()
    with pytest.raises(RuntimeError), activate(tracker):
        raise RuntimeError("stage failed")
    assert active_tracker() is not tracker


def test_properties_are_protocol_members() -> None:
    assert "planned_evaluations" in set(iter_protocol_members(PROTOCOLS["strategy"]))
    assert {"bind", "fixed_stages", "sample_genome", "build"} <= set(iter_protocol_members(PROTOCOLS["search_space"]))
    assert {"loader", "calibration_batch"} <= set(iter_protocol_members(PROTOCOLS["data"]))
    assert {"parent_id", "log_onnx_model", "prepare"} <= set(iter_protocol_members(PROTOCOLS["tracking"]))
    assert {"network", "search_options", "arch_costs"} <= set(iter_protocol_members(PROTOCOLS["scheduler"]))


def test_a_plugin_missing_a_member_is_refused_by_name() -> None:
    class HalfStrategy:
        name = "half"

        def search(self, problem, rng): ...

    with pytest.raises(ConfigError, match=r"strategy=half: .* lacks settings, planned_evaluations"):
        check_protocol(HalfStrategy(), "strategy", "half")


def test_experiments_open_on_their_runs_new_and_existing(store_uri: str) -> None:
    """`mlflow.experimentKind = custom_model_development`: MLflow 3's UI opens on the runs table, not the GenAI
    overview — set when tinyflow creates the experiment and on one made without it."""
    from mlflow.tracking import MlflowClient

    from tinyflow.tracking import EXPERIMENT_TAGS, ensure_store

    client = MlflowClient(tracking_uri=store_uri)
    new = ensure_store(store_uri, "made-by-tinyflow")
    assert client.get_experiment(new).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("made-before")
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert ensure_store(store_uri, "made-before") == old
    assert EXPERIMENT_TAGS.items() <= client.get_experiment(old).tags.items()
