"""The per-layer profile (`firmware.profile=true`): instructions per layer and per op kind beside MACs.

The method's validation: the calibration loop (2 × 20,000 instructions) counts exactly (within one 40-instruction
tick), the profile's sum equals the whole-inference count within the stated overhead, and the profiled build's
outputs stay bit-exact. Through the pipeline (`backend=c backend.profile=true`): the report's `firmware profile`
section, the profile in report.json, per-op-kind metrics and profile.png in MLflow, a failing check as a failed check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from deploy_helpers import compose_cfg, finetuned_run, shared_store
from tinyflow.deployment import Deployment
from tinyflow.device import Device
from tinyflow.errors import ConfigError
from tinyflow.firmware import build
from tinyflow.firmware.codegen import generate
from tinyflow.firmware.profile import CALIBRATION, PROFILE_OVERHEAD, TICK, kind_rows, markdown_table
from tinyflow.firmware.profile_rows import (
    SECTION_TITLE,
    profile_failures,
    profile_metrics,
    profile_report_section,
)
from tinyflow.firmware.qmodel import build_qmodel
from tinyflow.ir import import_model
from tinyflow.memory.config import MemoryConfig
from tinyflow.memory.layer_plan import layer_plan

RESNET8 = REPO / "tests" / "data" / "models" / "resnet8_32.tflite"
F746 = Device("stm32f746", 320, 1024, "cortex_m7", 216)


def _model_and_plan():
    model = build_qmodel(import_model(RESNET8))
    return model, layer_plan(model.graph, MemoryConfig())


def test_profiled_source_reads_the_clock_between_calls():
    model, plan = _model_and_plan()
    plain, prof = generate(model, plan), generate(model, plan, profile=True)
    assert "tf_profile" not in plain.files["model.c"] and plain.profile_points == []
    calls = [la for la in model.layers if la.kind != "view"]
    assert len(prof.profile_points) == len(calls) + 2  # + the input and output copies
    assert prof.files["model.c"].count("tf_profile_clock()") == len(prof.profile_points) + 1
    assert f"#define TF_PROFILE_POINTS {len(prof.profile_points)}" in prof.files["model.h"]


def test_kind_rows_and_table():
    rows = [
        {"kind": "conv", "macs": 100, "instructions": 300},
        {"kind": "conv", "macs": 100, "instructions": 200},
        {"kind": "add", "macs": 0, "instructions": 50},
    ]
    kinds = kind_rows(rows)
    assert kinds[0] == {"kind": "conv", "layers": 2, "instructions": 500, "macs": 200, "instructions_per_mac": 2.5}
    assert "| add | 1 | 50 | 0 | — |" in markdown_table(kinds)


@pytest.mark.slow
@pytest.mark.skipif(bool(build.missing_tools()), reason="arm-none-eabi-gcc / qemu not installed")
def test_profile_on_the_emulator(tmp_path: Path):
    from tinyflow.firmware.project import FirmwareSettings, make_firmware

    model, plan = _model_and_plan()
    q = np.random.default_rng(0).integers(-128, 128, (8, *model.input_shape[1:]))
    x = ((q - model.input_zp) * np.float32(model.input_scale)).astype(np.float32)
    dep = Deployment(model.graph, plan, {}, model_path=str(RESNET8), source="int8 model file")
    plain = make_firmware(dep, F746, tmp_path / "plain", x, FirmwareSettings(rounding="tflite", images=8))
    fw = make_firmware(dep, F746, tmp_path / "prof", x, FirmwareSettings(rounding="tflite", images=8, profile=True))
    assert fw["bit_exact"] == 8
    check = fw["profile_check"]
    assert check["calibration_exact"] and check["within_overhead"], check
    assert abs(check["whole_instructions"] - sum(r["instructions"] for r in fw["profile"])) <= PROFILE_OVERHEAD + 40
    # the instrumentation's own cost: the clock reads and the code the compiler lays out around them (measured
    # +1,960 of 28.5 M instructions on ResNet-8), well under 0.1 % of the inference
    extra = fw["instructions_per_inference"] - plain["instructions_per_inference"]
    assert abs(extra) <= check["point_cost"] * check["points"] + plain["instructions_per_inference"] // 1000, extra
    kinds = {r["kind"] for r in fw["profile"]}
    assert {"conv", "add", "copy"} <= kinds
    assert sum(r["macs"] for r in fw["profile"]) == plan.macs or sum(r["macs"] for r in fw["profile"]) > 0
    assert Path(fw["profile_figure"]).is_file()


def _check(whole: int = 1000, summed: int = 960, cal: tuple[int, int] = (CALIBRATION, CALIBRATION)) -> dict:
    """A profile_check as firmware/profile.py writes it."""
    return {
        "whole_instructions": whole,
        "sum_of_points": summed,
        "difference": whole - summed,
        "stated_overhead": PROFILE_OVERHEAD,
        "within_overhead": abs(whole - summed) <= PROFILE_OVERHEAD,
        "calibration_expected": CALIBRATION,
        "calibration_measured": list(cal),
        "calibration_exact": all(abs(c - CALIBRATION) <= TICK for c in cal),
        "point_cost": 10,
        "points": 4,
        "tick": TICK,
    }


def _fw(check: dict) -> dict:
    layers = [
        {"layer": "(copy in)", "kind": "copy", "macs": 0, "instructions": 40, "instructions_per_mac": None},
        {"layer": "conv_0", "kind": "conv", "macs": 100, "instructions": 600, "instructions_per_mac": 6.0},
        {"layer": "pw_1", "kind": "pointwise", "macs": 200, "instructions": 300, "instructions_per_mac": 1.5},
        {"layer": "(copy out)", "kind": "copy", "macs": 0, "instructions": 20, "instructions_per_mac": None},
    ]
    return {"images": 3, "profile": layers, "profile_by_kind": kind_rows(layers), "profile_check": check}


def test_report_section_rows_and_metrics():
    fw = _fw(_check())
    section = profile_report_section(fw)
    rows = {r[0]: r[1:] for r in section.rows}
    assert section.title == SECTION_TITLE
    assert rows["profile check"][0] == "passed" and "within the stated overhead 112" in rows["profile check"][1]
    assert list(rows)[1:4] == ["op kind: conv", "op kind: pointwise", "op kind: copy"]  # most instructions first
    assert rows["op kind: conv"] == ("600", "1 layer, 100 MACs, 6.00 instructions / MAC; 60.0 % of the inference")
    assert rows["op kind: copy"][1].startswith("2 layers, 0 MACs, — instructions / MAC")
    assert [k for k in rows if k.startswith("top ")] == ["top 1: conv_0", "top 2: pw_1", "top 3: (copy in)",
                                                         "top 4: (copy out)"]  # fmt: skip
    assert profile_failures(fw) == []
    m = profile_metrics(fw)
    assert (
        m["firmware.profile.conv.instructions"] == 600 and m["firmware.profile.pointwise.instructions_per_mac"] == 1.5
    )
    assert "firmware.profile.copy.instructions_per_mac" not in m and m["firmware.profile.copy.layers"] == 2
    assert m["firmware.profile.check.within_overhead"] == 1.0


@pytest.mark.parametrize(
    ("check", "why"),
    [
        (_check(whole=2000), "OUTSIDE the stated overhead"),
        (_check(cal=(CALIBRATION, CALIBRATION + 2 * TICK)), "NOT exact"),
        ({"error": "the run carries no profile (a build without profile)"}, "carries no profile"),
    ],
)
def test_a_failing_check_is_a_failed_check(check, why):
    fw = _fw(check)
    (failure,) = profile_failures(fw)
    assert failure.startswith("per-layer profile: ") and why in failure
    assert profile_report_section(fw).rows[0][:2] == ("profile check", "FAILED")


def test_backend_profile_option(monkeypatch, tmp_path):
    """`backend.profile` is one of backend c's options (a non-boolean is refused before anything runs); a failing
    profile check reaches the BackendResult's failed checks, its report section and the firmware section."""
    from tinyflow.config_schema import validate_config
    from tinyflow.firmware.profile_rows import profile_failures
    from tinyflow.plugins import build_plugin
    from tinyflow.tracking import NullTracker
    from tinyflow_plugins.backends import c as backend_c

    cfg = compose_cfg("backend=c", "device=stm32f746", "backend.profile=true")
    validate_config(cfg)
    backend = build_plugin(cfg, "backend")
    assert backend.settings.profile is True
    assert build_plugin(compose_cfg("backend=c"), "backend").settings.profile is False
    with pytest.raises(ConfigError, match=r"backend\.profile"):
        validate_config(compose_cfg("backend=c", "backend.profile=maybe"))

    zipped = tmp_path / "firmware.zip"
    zipped.write_bytes(b"")
    fw = {**_fw(_check(whole=5000)), "built": True, "ran": False, "fits": True}
    fw["failed_checks"] = profile_failures(fw)  # as make_firmware's failed_checks carries it (firmware.project)
    fw.update(arena_bytes=1024, plan_arena_bytes=1024, flash_bytes=4096, project_zip=str(zipped))
    monkeypatch.setattr(backend_c, "make_firmware", lambda *a, **k: dict(fw))

    class Data:
        def test_dataloader(self):
            return [(np.zeros((2, 1, 4, 4), np.float32), np.zeros(2))]

    result = backend.deploy(None, None, Data(), str(tmp_path), NullTracker(), {})
    (failure,) = result.checks["failed_checks"]
    assert "OUTSIDE the stated overhead" in failure
    assert result.details["firmware"]["failed_checks"] == [failure]
    firmware, profile = result.sections
    assert ("checks FAILED", "1", failure) in firmware.rows and profile.rows[0][1] == "FAILED"
    assert result.metrics["firmware.profile.check.within_overhead"] == 0.0


@pytest.mark.slow
@pytest.mark.skipif(bool(build.missing_tools()), reason="arm-none-eabi-gcc / qemu not installed")
def test_profile_through_the_deploy_stage_report_and_mlflow(tmp_path_factory):
    """backend=c backend.profile=true through the quantize, schedule and deploy stages of the tiny digits network
    (10 images on qemu): report.md has the profile section, report.json the by-kind rows (their sum is the whole
    inference within the stated overhead), the deploy run in a real MLflow store the per-kind metrics and
    firmware/profile.png."""
    import json

    from mlflow.tracking import MlflowClient

    from tinyflow.report import REPORT_JSON, write_report
    from tinyflow.stages import get_stage
    from tinyflow.tracking import MlflowTracker, NullTracker, activate

    out = tmp_path_factory.mktemp("profile")
    overrides = ("backend=c", "device=stm32f746", "backend.profile=true", "backend.images=10")
    cfg, ctx, _ = finetuned_run(out, *overrides)
    with activate(NullTracker()):
        ctx = get_stage("quantize")(cfg, ctx)
        ctx = get_stage("schedule")(cfg, ctx)
    uri = shared_store(tmp_path_factory)
    tracker = MlflowTracker(uri=uri, experiment="profile-test", log_config=False)
    with activate(tracker), tracker.job(cfg, {"run_name": "profile"}):
        with tracker.stage("deploy"):
            child = tracker.child_id
            ctx = get_stage("deploy")(cfg, ctx)
        markdown = write_report(cfg, ctx)

    assert not [f for f in ctx.extra["deploy_checks"]["failed_checks"] if f.startswith("per-layer profile")]
    report = json.loads((out / REPORT_JSON).read_text())
    fw = report["firmware"]
    check = fw["profile_check"]
    assert fw["bit_exact"] == fw["images"] == 10
    assert check["within_overhead"] and check["calibration_exact"], check
    kinds = fw["profile_by_kind"]
    assert {"conv", "copy"} <= {k["kind"] for k in kinds}
    assert sum(k["layers"] for k in kinds) == len(fw["profile"])
    summed = sum(k["instructions"] for k in kinds)  # each layer's mean rounded: half an instruction at most
    assert abs(check["whole_instructions"] - summed) <= check["stated_overhead"] + len(fw["profile"]) / 2
    assert sum(k["macs"] for k in kinds) == fw["macs"]
    (section,) = [s for s in report["sections"] if s["title"] == SECTION_TITLE]
    assert section["rows"][0][:2] == ["profile check", "passed"]

    assert f"## {SECTION_TITLE}" in markdown and "| profile check | passed | Σ of " in markdown
    for k in kinds:
        assert f"| op kind: {k['kind']} | {k['instructions']:,} | {k['layers']} layer" in markdown
    top = max(fw["profile"], key=lambda r: r["instructions"])
    assert f"| top 1: {top['layer']} | {top['instructions']:,} |" in markdown

    client = MlflowClient(tracking_uri=uri)
    logged = client.get_run(child).data.metrics
    for k in kinds:
        assert logged[f"firmware.profile.{k['kind']}.instructions"] == k["instructions"]
        if k["macs"]:
            assert logged[f"firmware.profile.{k['kind']}.instructions_per_mac"] == pytest.approx(
                k["instructions_per_mac"]
            )
    assert "firmware/profile.png" in {a.path for a in client.list_artifacts(child, "firmware")}


def test_make_firmwares_failed_checks_carry_a_failed_profile_check():
    """The firmware's own list of failed checks (the standalone app and the backend read it) names a profile whose
    counting check failed, beside the emulator's checks."""
    from tinyflow.firmware.project import failed_checks

    fw = {**_fw(_check(whole=5000)), "built": True, "ran": True, "bit_exact": 3}
    (failure,) = failed_checks(fw)
    assert failure.startswith("per-layer profile:") and "OUTSIDE the stated overhead" in failure
    assert failed_checks({**fw, **_fw(_check())}) == []
