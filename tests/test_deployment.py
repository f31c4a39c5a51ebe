"""One Deployment from `schedule` to every backend, one planning path (issue 21, docs/design.md §1, §4).

- the same plan from `python -m tinyflow.analyze`'s path, `plan_deployment` as `python -m tinyflow.firmware` calls
  it and the `schedule` stage: MobileNetV2 1.0 @ 224 with `scheduler=patch` on the apps' default device, and the
  shared int8 models (.onnx and .tflite);
- a Deployment survives its file (graph, quantization, constants, plan);
- a backend written only to the Protocol, outside tinyflow, receives the Deployment and its report section
  appears in report.md;
- an option a backend does not know is one ConfigError naming it; debug=fast names no backend's option.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import tinyflow
from conftest import REPO
from deploy_helpers import finetuned_run
from tinyflow.analyze.app import plan_network
from tinyflow.analyze.networks import build_network
from tinyflow.arch.genome import Arch
from tinyflow.context import RunContext
from tinyflow.deployment import DEPLOYMENT_FILE, Deployment
from tinyflow.errors import ConfigError
from tinyflow.ir.serialize import graph_to_dict
from tinyflow.plugins import build_plugin
from tinyflow.stages import get_stage

MODELS_DIR = REPO / "tests" / "data" / "models"  # the published models of ../shared/models, kept in the repo
MODELS = [f"{m}.{ext}" for m in ("person_detect", "kws_ref_model", "ad01_int8") for ext in ("onnx", "tflite")]
#: the apps' default device (conf/analyze.yaml, conf/firmware.yaml)
DEVICE = "device=stm32f746"


def _compose(config: str, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(tinyflow.CONF_DIR), version_base=None):
        return compose(config, overrides=["tracking=none", *overrides])


def _analyze(network: tuple[str, ...]) -> Deployment:
    """What `python -m tinyflow.analyze` plans (`analyze.app.plan_network`)."""
    return plan_network(_compose("analyze", "scheduler=patch", DEVICE, *network))


def _firmware(network: tuple[str, ...]) -> Deployment:
    """What `python -m tinyflow.firmware` plans (`firmware.app.plan_model`): its network's IR (the app's
    `network_graph` for a model file; the arch's IR otherwise), the file as `model_path`."""
    cfg = _compose("firmware", "scheduler=patch", DEVICE, *network)
    if cfg.network.get("path") is not None:
        from tinyflow.firmware.app import network_graph

        graph, net, path = network_graph(cfg.network)
    else:
        from tinyflow.ir.from_arch import from_arch

        graph, net, path = from_arch(build_network(cfg.network)), None, None
    from tinyflow.firmware.app import plan_model

    return plan_model(cfg, graph, net, path)


def _schedule(tmp_path: Path, arch: Arch, model_file: str | None) -> Deployment:
    """The `schedule` stage's Deployment: the arch's network, or the int8 file `quantize` would have exported."""
    cfg = _compose("config", "scheduler=patch", DEVICE)
    ctx = RunContext(output_dir=str(tmp_path), arch=arch.to_dict(), onnx_int8_path=model_file)
    ctx = get_stage("schedule")(cfg, ctx)
    assert ctx.artifacts["deployment"] == str(tmp_path / DEPLOYMENT_FILE)
    deployment = Deployment.load(ctx.artifacts["deployment"])
    assert deployment.analysis == ctx.plan  # the context's analysis is the Deployment's
    return deployment


def _same_plan(*deployments: Deployment) -> None:
    """Scheduler, patch grid, arena, peak, MACs and every step equal."""
    first = deployments[0]
    for other in deployments[1:]:
        assert other.analysis["scheduler"] == first.analysis["scheduler"]
        for key in ("n_patches", "patch_blocks"):
            assert other.plan.extra.get(key) == first.plan.extra.get(key), key
        assert (other.arena_bytes, other.peak_live_bytes) == (first.arena_bytes, first.peak_live_bytes)
        assert other.macs == first.macs
        assert other.plan.to_dict()["steps"] == first.plan.to_dict()["steps"]


def test_one_plan_for_mobilenetv2_on_the_default_device(tmp_path: Path) -> None:
    from tinyflow.arch import mobilenetv2

    network = ("network=mobilenetv2", "network.width_mult=1.0", "network.resolution=224")
    analyzed = _analyze(network)
    fw = _firmware(network)
    scheduled = _schedule(tmp_path, mobilenetv2(1.0, 224, num_classes=1000), None)
    _same_plan(analyzed, fw, scheduled)
    assert analyzed.flash_bytes == fw.flash_bytes == scheduled.flash_bytes  # no file: the cost model's count
    assert analyzed.analysis["scheduler"] == "patch"
    # issue 22: the policy prices each candidate's firmware overhead beside its arena (a patch plan's scratch is
    # its patch's, not the whole map's): 4x4 fits with it (a bound for any plan of the graph would force 5x5)
    assert (analyzed.plan.extra["n_patches"], analyzed.plan.extra["patch_blocks"]) == (4, 5)
    assert analyzed.arena_bytes == 312_816
    total = analyzed.analysis["sram_total_bytes"]
    assert total == 312_816 + analyzed.analysis["sram_overhead_bytes"] <= analyzed.analysis["sram_budget_bytes"]


@pytest.mark.parametrize("name", MODELS)
def test_one_plan_for_the_shared_models(name: str, tmp_path: Path) -> None:
    from tinyflow.testing import tiny_arch

    path = MODELS_DIR / name
    kind = "onnx" if path.suffix == ".onnx" else "tflite"
    network = (f"network={kind}", f"network.path={path}")
    analyzed = _analyze(network)
    fw = _firmware(network)
    scheduled = _schedule(tmp_path, tiny_arch(), str(path))  # the file is what schedule imports and plans
    assert scheduled.model_path == fw.model_path == str(path)
    _same_plan(analyzed, fw, scheduled)
    # all three count the deployed file's flash (memory convention), decided once by analyze.conventions
    assert analyzed.flash_bytes == fw.flash_bytes == scheduled.flash_bytes


# ---------------------------------------------------------------- the file
def _equal_constants(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert set(a) == set(b)
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name


@pytest.mark.parametrize("name", ["person_detect.onnx", "kws_ref_model.tflite"])
def test_deployment_round_trips_its_file(name: str, tmp_path: Path) -> None:
    from tinyflow.testing import tiny_arch

    if not (MODELS_DIR / name).is_file():
        pytest.skip(f"{name} is not in tests/data/models")
    made = _schedule(tmp_path, tiny_arch(), str(MODELS_DIR / name))
    assert made.quantized and made.graph.constants  # the IR carries the file's quantization and weights
    assert made.source == ("int8 ONNX" if name.endswith(".onnx") else "int8 TFLite")
    loaded = Deployment.load(made.save(tmp_path / "again.npz"))
    assert graph_to_dict(loaded.graph) == graph_to_dict(made.graph)
    assert loaded.graph.quant == made.graph.quant
    _equal_constants(loaded.graph.constants, made.graph.constants)
    assert loaded.plan.to_dict() == made.plan.to_dict()
    assert loaded.analysis == made.analysis and loaded.network == made.network
    assert (loaded.model_path, loaded.source) == (made.model_path, made.source)
    assert loaded.input_shape == made.input_shape


def test_a_corrupt_deployment_file_is_one_paragraph(tmp_path: Path) -> None:
    from tinyflow.deployment import DeploymentFileError

    bad = tmp_path / DEPLOYMENT_FILE
    bad.write_bytes(b"not a deployment")
    with pytest.raises(DeploymentFileError, match="rerun the 'schedule' stage"):
        Deployment.load(bad)


# ---------------------------------------------------------------- a backend from outside tinyflow
BACKEND_SOURCE = '''
"""A backend written outside tinyflow, to the Protocol only."""

from tinyflow.contracts import BackendResult, ReportSection


class TheirBackend:
    name = "theirs"
    option_ranges = {"repeats": {"min": 1}}

    def __init__(self, repeats: int = 1, label: str = "board"):
        self.repeats, self.label = repeats, label

    def deploy(self, deployment, model, data, workdir, tracker, files):
        rows = [
            ("arena (theirs)", f"{deployment.arena_bytes:,} B", f"{deployment.plan.scheduler} plan"),
            ("steps", str(len(deployment.plan.steps))),
            ("quantized IR", str(deployment.quantized)),
        ]
        return BackendResult(
            metrics={"theirs_arena_bytes": float(deployment.arena_bytes)},
            checks={"received": type(deployment).__name__},
            sections=[ReportSection(f"their {self.label}", rows, ["Measured by a plugin tinyflow does not know."])],
            details={"theirs": {"repeats": self.repeats}},
        )
'''


def _write_backend_plugin(root: Path) -> Path:
    pkg = root / "tfext_backend"
    (pkg / "conf" / "backend").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(BACKEND_SOURCE))
    (pkg / "conf" / "backend" / "theirs.yaml").write_text("_target_: tfext_backend.TheirBackend\nrepeats: 2\n")
    dist = root / "tfext_backend-0.0.0.dist-info"  # installed as a user installs a plugin (entry point)
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tfext-backend\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text("[tinyflow.plugins]\ntfext_backend = tfext_backend\n")
    return pkg / "conf"


def test_protocol_only_backend_gets_the_deployment_and_its_section_reaches_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy_helpers import compose_cfg
    from tinyflow.config_schema import validate_config
    from tinyflow.report import REPORT_MD, write_report

    conf = _write_backend_plugin(tmp_path / "plugin")
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    cfg, ctx, _ = finetuned_run(tmp_path / "run")
    ctx = get_stage("quantize")(cfg, ctx)
    ctx = get_stage("schedule")(cfg, ctx)
    ctx.completed += ["quantize", "schedule"]
    theirs = compose_cfg("backend=theirs", f"hydra.searchpath=[file://{conf.as_posix()}]")
    validate_config(theirs)
    from tinyflow.testing import check_backend
    from tinyflow.tracking import NullTracker

    deployment = Deployment.load(ctx.artifacts["deployment"])
    check_backend(build_plugin(theirs, "backend"), deployment, None, None, str(tmp_path), NullTracker(), {})
    ctx = get_stage("deploy")(theirs, ctx)
    ctx.completed.append("deploy")
    assert ctx.extra["deploy_checks"] == {"received": "Deployment"}
    assert ctx.metrics["theirs_arena_bytes"] == ctx.plan["arena_bytes"]
    assert ctx.extra["theirs"] == {"repeats": 2}
    markdown = write_report(theirs, ctx)
    assert markdown == (Path(ctx.output_dir) / REPORT_MD).read_text()
    assert "## their board" in markdown
    assert f"| arena (theirs) | {ctx.plan['arena_bytes']:,} B |" in markdown
    assert "| steps |" in markdown and "Measured by a plugin tinyflow does not know." in markdown
    with pytest.raises(ConfigError, match=r"backend.repeats = 0 must be at least 1"):
        validate_config(compose_cfg("backend=theirs", "backend.repeats=0", f"hydra.searchpath=[file://{conf}]"))


# ---------------------------------------------------------------- backend options
def test_an_option_the_backend_does_not_know_is_one_config_error() -> None:
    from deploy_helpers import compose_cfg
    from tinyflow.config_schema import validate_config

    cfg = compose_cfg("+backend.images=5")  # backend c's option, given to onnxruntime
    with pytest.raises(ConfigError, match=r"backend.images: unknown key"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match=r"`backend.images` is not an option of .*OnnxRuntimeBackend") as info:
        build_plugin(cfg, "backend")
    assert "latency_runs" in str(info.value) and "\n" not in str(info.value)  # names what it takes, one paragraph


def test_debug_fast_sets_no_backend_option() -> None:
    from omegaconf import OmegaConf

    fast_c = OmegaConf.to_container(_compose("config", "debug=fast", "backend=c").backend, resolve=True)
    assert not {"latency_runs", "latency_warmup"} & set(fast_c)
    fast = _compose("config", "debug=fast", "backend=onnxruntime").backend
    plain = _compose("config", "backend=onnxruntime").backend
    assert (fast.latency_runs, fast.latency_warmup) == (10, 2) and (plain.latency_runs, plain.latency_warmup) == (
        100,
        10,
    )


# ---------------------------------------------------------------- the search plans as schedule does
@pytest.mark.slow
def test_the_search_verifies_the_plan_the_schedule_stage_makes(run_cli, tmp_path: Path) -> None:
    """The search checks its best candidate with `plan_deployment` (the configured scheduler, memory, device and
    cost model), so the plan it verified is the plan `schedule` makes of the deployed network: same schedule,
    same arena — on a budget where the patch scheduler has to choose."""
    import json

    from conftest import run_small_pipeline

    _, ctx, _ = run_small_pipeline(
        run_cli, tmp_path, "scheduler=patch", "device=custom", "device.sram_kb=12", "device.flash_kb=512"
    )
    searched = json.loads((tmp_path / "run" / "search" / "search_summary.json").read_text())
    assert searched["scheduler"] == "patch"  # it chose between the layer plan and patch plans for 12 KB
    assert searched["sram_total_bytes"] <= searched["sram_budget_bytes"] == 12 * 1024
    assert searched["schedule_used"] == ctx["plan"]["schedule_used"]
    assert searched["plan_arena_bytes"] == ctx["plan"]["arena_bytes"]
