"""The analysis of one network: the scheduler's plan, the cost model's figures, the per-layer profile, fits?

Called only through `tinyflow.deployment.plan_deployment`, the one planning path of `python -m tinyflow.analyze`,
`python -m tinyflow.firmware` and the pipeline's `schedule` stage: the one place a network is planned and costed.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tinyflow.analyze.conventions import apply_memory_convention, model_flash
from tinyflow.arch.genome import Arch
from tinyflow.contracts import Device, MemoryConfig, ScheduleBudget
from tinyflow.cost.analytic import analytic_report
from tinyflow.cost.latency import latency_source
from tinyflow.ir.graph import Graph
from tinyflow.memory import runtime_overhead
from tinyflow.memory.layer_plan import layer_plan
from tinyflow.memory.plan import ExecutionPlan
from tinyflow.network import DeployedNetwork


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def network_graphs(network: Arch | Graph | DeployedNetwork, scheduler: Any) -> tuple[Graph, Graph]:
    """(the IR of the network `scheduler` deploys for `network`, the IR of `network` as given). An imported graph
    is deployed as it is; an arch is the plain network of it."""
    if isinstance(network, Graph):
        return network, network
    net = DeployedNetwork.plain(network) if isinstance(network, Arch) else network
    deployed = scheduler.network(net)
    given = net.graph()
    return (given if deployed == net else deployed.graph()), given


def analyze(
    graph: Graph,
    scheduler: Any,
    memory: MemoryConfig,
    device: Device,
    cost_model: Any = None,
    compare_layer: bool = True,
    baseline: Graph | None = None,
    strict: bool = False,
    model_path: str | None = None,
) -> tuple[dict[str, Any], ExecutionPlan, ExecutionPlan | None]:
    """(analysis dict, the scheduler's plan of `graph`, the layer plan compared against or None).

    Costs (MACs, params, flash of the model alone, latency, energy) are the cost model's (`cost_model`; without
    one the analytic counts, no latency). The layer plan is of `baseline` (the network before the scheduler
    changed it; default `graph`), and left out when it would be the scheduler's own plan of the same graph.
    The scheduler chooses for the device's SRAM budget (`Scheduler.for_budget`); `strict`: an option invalid for
    this network is an error (analysing one network) rather than clamped (a pipeline's deployed network).
    Flash is decided once, by `conventions.model_flash`: the cost model's count, or `model_path`'s (the int8 file
    deployed) or the imported file's under the memory convention."""

    # the whole budget; a scheduler choosing between plans prices each one's firmware overhead beside its arena
    def overhead(g: Graph, p: ExecutionPlan) -> int:
        return runtime_overhead.predict(g, p, device.core).total

    budget = ScheduleBudget(device.sram_budget_bytes, "arena", device, cost_model, strict, overhead)
    plan: ExecutionPlan = scheduler.for_budget(budget).plan(graph, memory)
    name = scheduler.name
    base = graph if baseline is None else baseline
    layer = layer_plan(base, memory) if compare_layer else None
    if layer is not None and base is graph and layer.scheduler == plan.scheduler:
        layer = None
    cost = (
        cost_model.estimate(graph, device, plan)
        if cost_model is not None
        else analytic_report(graph, device, memory, plan)
    )
    flash, flash_source = model_flash(cost.flash_bytes, graph, memory, model_path)  # the one place flash is decided
    out: dict[str, Any] = {
        "network": base.name,
        "scheduler": name,
        "cost_model": cost_model.name if cost_model is not None else "analytic",
        "device": device.name,
        "memory": asdict(memory),
        "peak_live_bytes": plan.peak_live_bytes,
        "arena_bytes": plan.arena_bytes,
        "arena_algorithm": plan.arena_algorithm,
        "flash_bytes": flash,
        "flash_source": flash_source,
        "macs": cost.macs,
        "params": cost.params,
        "latency_ms": cost.latency_ms,
        "energy_mj": cost.energy_mj,
        "peak_layer": plan.peak_layer,
        "sram_budget_bytes": device.sram_budget_bytes,
        "flash_budget_bytes": device.flash_budget_bytes,
    }
    if cost.latency_ms is not None:
        out["latency_source"] = latency_source(device)
    if flash != cost.flash_bytes:
        out["ir_flash_bytes"] = cost.flash_bytes  # the cost model's count of the IR, beside the file's
    apply_memory_convention(out, graph, memory)
    set_overhead(out, runtime_overhead.predict(graph, plan, device.core))
    set_fits(out)
    for key, value in plan.extra.items():  # the scheduler's own figures (patch grid, RNNPool cut, ...)
        out.setdefault(key, _jsonable(value))
    out["scheduler_figures"] = [k for k in plan.extra if out[k] is not None and not isinstance(out[k], dict)]
    if layer is not None:
        out["layer_peak_live_bytes"] = layer.peak_live_bytes
        out["layer_arena_bytes"] = layer.arena_bytes
        out["layer_macs"] = layer.macs
        out["peak_reduction"] = layer.peak_live_bytes / plan.peak_live_bytes if plan.peak_live_bytes else None
        out.setdefault("extra_macs_ratio", plan.macs / layer.macs - 1.0 if layer.macs else None)
    out["per_layer"] = _jsonable(plan.per_layer)
    return out, plan, layer


def set_overhead(analysis: dict[str, Any], overhead: runtime_overhead.Overhead) -> None:
    """`sram_overhead_bytes` (the firmware's SRAM beside the arena on the device's core), its parts and model, and
    `sram_total_bytes` = arena (+ a runtime's persistent tail) + overhead: the plan's SRAM figure."""
    arena = analysis.get("arena_total_bytes", analysis["arena_bytes"])
    analysis["sram_overhead_bytes"] = overhead.total
    analysis["sram_overhead_parts"] = overhead.parts()
    analysis["sram_overhead_model"] = f"{overhead.core} {overhead.opt}: {overhead.source}"
    analysis["sram_total_bytes"] = arena + overhead.total


def set_fits(analysis: dict[str, Any]) -> None:
    """`fits_sram` (arena + the firmware's overhead within the SRAM budget; an analysis without the overhead: the
    placed arena), `fits_flash` (the model within the flash budget, i.e. flash − the runtime's reserve), `fits`."""
    arena = analysis.get("arena_total_bytes", analysis["arena_bytes"])  # + a runtime's persistent tail
    analysis["fits_sram"] = analysis.get("sram_total_bytes", arena) <= analysis["sram_budget_bytes"]
    analysis["fits_flash"] = analysis["flash_bytes"] <= analysis["flash_budget_bytes"]
    analysis["fits"] = analysis["fits_sram"] and analysis["fits_flash"]
