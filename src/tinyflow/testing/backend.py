"""The behaviour suite of a backend: it takes the Deployment and returns a well-formed `BackendResult`.

A backend needs an exported model and a planned Deployment, so its suite runs on what a test made (tinyflow's
own backends: tests/test_backend.py, tests/test_deployment.py; a plugin: its own tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinyflow.contracts import BackendResult, ReportSection
from tinyflow.plugins import check_protocol


def check_backend_result(result: Any, name: str = "backend") -> BackendResult:
    """A `BackendResult`: numeric metrics, JSON-ready checks and details, files that exist, report sections of
    (label, value[, note]) string rows."""
    assert isinstance(result, BackendResult), f"{name}: deploy returned {type(result).__name__}, not a BackendResult"
    for key, value in result.metrics.items():
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{name}: metric {key} = {value!r}"
    json.dumps(result.checks)
    json.dumps(result.details)
    for key, path in result.files.items():
        assert Path(path).exists(), f"{name}: file {key} = {path} does not exist"
    for section in result.sections:
        assert isinstance(section, ReportSection), f"{name}: a section is a {type(section).__name__}"
        assert section.title, f"{name}: a report section needs a title"
        for row in section.rows:
            assert len(row) in (2, 3) and all(isinstance(c, str) for c in row), f"{name}: row {row!r}"
        assert ReportSection.from_dict(section.to_dict()) == section, f"{name}: section '{section.title}' round trip"
    return result


def check_backend(
    backend: Any, deployment: Any, model: Any, data: Any, workdir: str, tracker: Any, files: dict[str, str]
) -> BackendResult:
    """Protocol members, then `deploy(deployment, ...)` and its result's shape."""
    check_protocol(backend, "backend", type(backend).__name__)
    result = backend.deploy(deployment, model, data, workdir, tracker, files)
    return check_backend_result(result, getattr(backend, "name", type(backend).__name__))
