"""Stage `search` (TinyNAS stage 2, MCUNetV2 joint search): the most accurate subnet (and schedule) that fits.

The trained supernet (`tinyflow.supernet.Supernet`, loaded from `ctx.supernet_checkpoint`) gives BN-recalibrated
accuracy per arch, or trains the accuracy predictor that stands in for it. Costs come from the memory engine: each
candidate is the network the scheduler deploys for the supernet's network of the arch
(`scheduler.network(supernet.network(arch))`, planned by the scheduler); with `strategy.joint=true` the options the
scheduler offers (`Scheduler.search_options`) are searched with the arch. The chosen candidate is re-checked on the
engine's full plan (arena layout).

A supernet that runs another kind of network than a plain one (an RNNPool stem: `rnnpool`, with the options recorded
in its checkpoint) is costed as that network, rewritten exactly once, as the supernet runs it.

Never worse with more memory (issue 26): every subnet already measured on this supernet (the accuracy memo, shared
by a sweep's jobs) that fits this search's budgets is a candidate (`tinyflow.search.memo_seed`); when the best of
them whose arena fits beats the search's choice on measured val accuracy, it is the result (`result_source`:
`accuracy memo`). The chosen subnet's val accuracy carries its 95 % Wilson interval over the val images.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig

from tinyflow.arch.genome import Arch
from tinyflow.confidence import ci_metrics, dataset_size, format_accuracy
from tinyflow.context import RunContext, atomic_write_text
from tinyflow.contracts import ScheduleBudget
from tinyflow.errors import BudgetError, ConfigError, TinyflowError
from tinyflow.network import DeployedNetwork
from tinyflow.plugins import build_device, build_memory, build_plugin
from tinyflow.search.accuracy_memo import accuracy_memo
from tinyflow.search.arch_figure import patch_stage_kernels
from tinyflow.search.costing import SchedulerCosts, fixed_overhead, verify_plan
from tinyflow.search.memo_seed import MemoCandidates, memo_candidates
from tinyflow.search.parallel_eval import measure_many
from tinyflow.search.problem import Budgets, SearchProblem
from tinyflow.search.strategy import SearchSettings
from tinyflow.stages import stage
from tinyflow.supernet import Supernet
from tinyflow.tracking import active_tracker
from tinyflow.training.budget import epoch_budget
from tinyflow.training.remote_cache import pull_accuracies, push_accuracies

log = logging.getLogger(__name__)

#: the accuracy memo's subnets that fit this search's budgets (issue 26), in the search folder
MEMO_FILE = "memo_candidates.json"


def load_supernet(cfg: DictConfig, ctx: RunContext) -> Supernet:
    """The train stage's supernet, with the configured data to recalibrate and score its subnets on."""
    if not ctx.supernet_checkpoint:
        raise TinyflowError(
            "search: no trained supernet in this run (ctx.supernet_checkpoint is empty). Run the `train` stage "
            "with a supernet trainer before `search` (stages=[space,train,search,...]) or resume a run that trained "
            "one."
        )
    return Supernet.load(ctx.supernet_checkpoint, build_plugin(cfg, "data"))


def check_deploys(scheduler: Any, network_of: Callable[[Arch], DeployedNetwork], arch: Arch) -> None:
    """A scheduler can cost a supernet's subnets when it deploys the kind of network the supernet runs."""
    want = network_of(arch)
    if want.kind == "static":
        return
    got = scheduler.network(DeployedNetwork.plain(arch)).kind
    if got != want.kind:
        name = scheduler.name
        raise ConfigError(
            f"search: the supernet's subnets are {want.kind} networks (its stem), but scheduler={name} deploys "
            f"{got} networks. Use a scheduler that deploys {want.kind} networks (scheduler={want.kind}) to cost and "
            "deploy the network the supernet trained."
        )


def make_costs(
    cfg: DictConfig,
    settings: SearchSettings,
    device: Any,
    network_of: Callable[[Arch], DeployedNetwork] | None = None,
    probe: Arch | None = None,
) -> tuple[SchedulerCosts, str]:
    """Costs of candidates under the configured scheduler; `network_of` is the supernet's network of an arch
    (None: plain), checked on `probe` against what the scheduler deploys."""
    memory = build_memory(cfg)
    scheduler = build_plugin(cfg, "scheduler")
    if network_of is not None and probe is not None:
        check_deploys(scheduler, network_of, probe)
    name = scheduler.name

    def make(options: dict[str, int]) -> Any:
        return build_plugin(cfg, "scheduler", **options) if options else scheduler

    timed = settings.latency_budget_ms is not None or settings.energy_budget_mj is not None
    cost_model = build_plugin(cfg, "cost_model") if timed else None
    # with a latency budget the patch policy ranks fitting plans by the cost model's latency, else by extra MACs
    # the policy's share of the budget: less the firmware's runtime and stack (a candidate's own scratch and output
    # buffer are added to its cost, `SchedulerCosts.overhead`, and checked against the whole budget)
    budget = ScheduleBudget(
        device.sram_budget_bytes - fixed_overhead(device.core), settings.memory_metric, device, cost_model
    )
    costs = SchedulerCosts(
        memory,
        make,
        device=device,
        cost_model=cost_model,
        metric=settings.memory_metric,
        network_of=network_of,
        budget=budget,
    )
    return costs, name


class _EvalProgress:
    """Counts accuracy evaluations on a rich bar (total = the strategy's planned budget when known)."""

    def __init__(self, fn: Any, total: int | None, label: str, enabled: bool):
        self.fn, self.total, self.label, self.enabled = fn, total, label, enabled
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _EvalProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total)
        return self

    def __call__(self, arch: Arch) -> float:
        v = self.fn(arch)
        self.advance(1)
        return v

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def train_predictor(
    settings: SearchSettings,
    problem: SearchProblem,
    supernet_acc: Any,
    seed: int,
    tracker: Any,
    measure_many: Callable[..., list[float]] | None = None,
    workers: int = 1,
):
    """Measure `n_samples` feasible archs on the supernet (all at once with `measure_many(archs, progress)`) and fit
    the MLP predictor on them (its cross-validation fits on `workers` processes)."""
    from tinyflow.search.predictor import AccuracyPredictor, PredictorConfig, sample_pairs

    pc = PredictorConfig(**{"seed": seed, **settings.predictor})
    with _EvalProgress(supernet_acc, pc.n_samples, "search: predictor pairs", settings.progress) as acc:
        draw = lambda r: problem.draw(lambda: problem.sample(r)).arch  # noqa: E731
        ticks = acc.advance if measure_many is not None else None  # `acc` ticks the one-by-one pass itself
        archs, accs = sample_pairs(draw, acc, pc.n_samples, seed, progress=ticks, measure_many=measure_many)
    if len(archs) < pc.min_pairs:
        log.warning(
            "search: only %d distinct subnets fit the budgets; the predictor needs at least %d to be cross-validated, "
            "so every candidate is scored on the supernet instead (as with strategy.objective=supernet)",
            len(archs),
            pc.min_pairs,
        )
        skipped = {"predictor_skipped": 1.0, "predictor_pairs_found": float(len(archs))}
        tracker.log_metrics(skipped)
        return None, skipped
    if len(archs) < pc.n_samples:
        log.info("search: %d predictor pairs of the %d asked: no more distinct subnets fit", len(archs), pc.n_samples)
    predictor = AccuracyPredictor(problem.space.encode, pc)
    metrics = predictor.fit(archs, accs, workers=workers)
    tracker.log_metrics(metrics)
    log.info(
        "search: predictor Spearman %.3f (95 %% CI %.2f–%.2f), Kendall %.3f on %d pairs, each predicted by the "
        "model of the %d-fold cross-validation that did not see it",
        metrics["predictor_spearman"],
        metrics["predictor_spearman_ci95_low"],
        metrics["predictor_spearman_ci95_high"],
        metrics["predictor_kendall"],
        int(metrics["predictor_test_pairs"]),
        int(metrics["predictor_folds"]),
    )
    return predictor, metrics


def deployed_plan(cfg: DictConfig, costs: SchedulerCosts, device: Any) -> Callable[[Arch, dict[str, int]], Any]:
    """The plan the `schedule` stage would make of a candidate: `plan_deployment` with the configured scheduler
    (built with the candidate's options), memory conventions, device and cost model — the one planning path."""
    from tinyflow.deployment import plan_deployment

    cost_model = build_plugin(cfg, "cost_model")

    def plan_of(arch: Arch, options: dict[str, int]) -> Any:
        scheduler = build_plugin(cfg, "scheduler", **(options or {}))
        graph = costs.network(arch, options).graph()
        return plan_deployment(graph, scheduler, costs.memory, device, cost_model, compare_layer=False)

    return plan_of


def choose_verified(
    result: Any, costs: SchedulerCosts, device: Any, plan_of: Callable[[Arch, dict[str, int]], Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The most accurate evaluated candidate whose full plan (real arena layout) fits the SRAM budget; `plan_of`
    plans a candidate as the schedule stage will (`deployed_plan`), else as the search costed it."""
    rows = sorted(result.evaluated, key=lambda r: (-r["accuracy"], r["peak_sram"], r["macs"]))
    seen = set()
    for row in rows:
        key = (row["arch"].key(), tuple(sorted(row["schedule"].items())))
        if key in seen:
            continue
        seen.add(key)
        # re-planned as it was costed: with its searched genes, or by the scheduler's own choice (its policy)
        options = row.get("schedule_genes", row["schedule"])
        if plan_of is not None:
            deployment = plan_of(row["arch"], options)
            plan, graph = deployment.plan, deployment.graph
        else:
            plan, graph = costs.plan(row["arch"], options), costs.network(row["arch"], options).graph()
        check = verify_plan(plan, device, graph)
        if check["arena_fits"]:
            return row, check
        log.info(
            "search: candidate at %.4f needs arena + firmware overhead %d B > budget %d B; trying the next",
            row["accuracy"],
            check["sram_total_bytes"],
            check["sram_budget_bytes"],
        )
    raise BudgetError(
        f"search: none of the {len(seen)} evaluated candidates has an arena layout + firmware overhead within the "
        f"SRAM budget {device.sram_budget_bytes} B (their peak live bytes fit, the placed arenas do not). Lower the "
        "width / resolution or use scheduler=patch."
    )


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Small-batch evaluation of tiny CNNs runs faster on one thread, far faster on a busy machine (measured on
    this project's 2-core host under load: 1.1–1.6 s per subnet on 1 thread against 6.6–25 s on 2). Never more
    than the job's share of the cores (tinyflow.threads set it: the count torch has now)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(min(int(n), before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@stage("search")
def run(cfg: DictConfig, ctx: RunContext) -> RunContext:
    strategy = build_plugin(cfg, "strategy")
    settings: SearchSettings = strategy.settings
    import torch

    share = torch.get_num_threads()  # the job's share of the cores (tinyflow.threads)
    workers = max(1, share // settings.torch_threads) if settings.torch_threads else 1
    with torch_threads(settings.torch_threads):
        return _run(cfg, ctx, strategy, settings, workers)


def _run(cfg: DictConfig, ctx: RunContext, strategy: Any, settings: SearchSettings, workers: int) -> RunContext:
    tracker = active_tracker()
    device = build_device(cfg)
    supernet = load_supernet(cfg, ctx)
    space = supernet.space  # the space the supernet was trained on, recorded in its checkpoint
    costs, sched_name = make_costs(cfg, settings, device, supernet.network, space.max_arch())
    seed = int(cfg.get("seed", 0))
    budgets = Budgets(
        sram_bytes=device.sram_budget_bytes,
        flash_bytes=device.flash_budget_bytes,
        latency_ms=settings.latency_budget_ms,
        energy_mj=settings.energy_budget_mj,
    )

    n_val_split = dataset_size(supernet.evaluator.loader("val"))
    wanted = val_images_budget(settings, space.resolutions)
    n_val = wanted if n_val_split is None else min(n_val_split, wanted or n_val_split)
    split = val_split_label(n_val, n_val_split)

    def measure(arch: Arch) -> float:
        return supernet.evaluate(arch, "val", n_val)

    def measure_all(archs: list[Arch], progress: Callable[[int], None] | None = None) -> list[float]:
        return measure_many(supernet, archs, "val", n_val, workers, progress)

    memo = accuracy_memo(cfg, ctx.supernet_checkpoint)
    pull_accuracies(tracker, memo)  # through a tracking server: rows measured on other machines (§16)
    supernet_acc = measure if memo is None else memo.wrap(measure, split)
    supernet_acc_many = measure_all if memo is None else memo.wrap_many(measure_all, split)

    problem = SearchProblem(
        space,
        supernet_acc,
        costs,
        budgets,
        schedule_choices=costs.joint_choices(settings.joint),
    )
    if memo is not None:  # what earlier jobs on this supernet measured that fits this budget (issue 26)
        earlier = memo_candidates(problem, memo, split)
        log.info(
            "search: %d of the %d subnets in the accuracy memo fit this budget%s",
            len(earlier.rows),
            earlier.read,
            "" if earlier.best is None else f"; the best has val accuracy {earlier.best['accuracy']:.4f}",
        )
    tracker.log_params(
        {
            "strategy": strategy.name,
            "objective": settings.objective,
            "joint": settings.joint,
            "scheduler": sched_name,
            "sram_budget_bytes": budgets.sram_bytes,
            "flash_budget_bytes": budgets.flash_bytes,
        }
    )
    predictor_metrics: dict[str, float] = {}
    if settings.objective == "predictor":
        predictor, predictor_metrics = train_predictor(
            settings, problem, supernet_acc, seed, tracker, supernet_acc_many, workers
        )
        if predictor is not None:
            problem.accuracy_fn = predictor.predict
    label = f"search: {strategy.name} ({settings.objective})"
    with _EvalProgress(problem.accuracy_fn, strategy.planned_evaluations, label, settings.progress) as counted:
        problem.accuracy_fn = counted
        result = strategy.search(problem, random.Random(seed))

    plan_of = deployed_plan(cfg, costs, device)
    best, check = choose_verified(result, costs, device, plan_of)
    best_arch: Arch = best["arch"]
    supernet_best = supernet_acc(best_arch)
    found = memo_candidates(problem, memo, split) if memo is not None else MemoCandidates()
    source = "search"
    picked = _memo_fallback(found, supernet_best, costs, device, plan_of)
    if picked is not None:
        log.info(
            "search: a subnet already measured on this supernet (accuracy memo) fits and beats the search's choice: "
            "val accuracy %.4f > %.4f; taking it",
            picked[0]["accuracy"],
            supernet_best,
        )
        (best, check), source = picked, "accuracy memo"
        best_arch, supernet_best = best["arch"], float(best["accuracy"])
    summary = {
        "strategy": strategy.name,
        "objective": settings.objective,
        "joint": settings.joint,
        "scheduler": sched_name,
        "supernet_stem": supernet.stem.get("stem", "conv"),
        "n_evaluations": result.n_evaluations,
        "search_score": best["accuracy"],
        "supernet_val_accuracy": supernet_best,
        **ci_metrics("supernet_val_accuracy", supernet_best, n_val),
        **({"val_images": n_val} if n_val is not None else {}),
        "result_source": source,
        "memo_fallback": float(source != "search"),
        **found.summary(),
        "peak_sram": best["peak_sram"],
        "flash": best["flash"],
        "macs": best["macs"],
        "schedule": best["schedule"],
        **check,
        **predictor_metrics,
    }
    # MCUNetV2's observation, from this run: the kernels inside the patch stage against those after it
    patch_blocks = int((check.get("schedule") or best["schedule"] or {}).get("patch_blocks") or 0)
    summary.update(patch_stage_kernels(best_arch, patch_blocks))
    if memo is not None:  # subnets measured by an earlier job on this supernet are looked up, not measured again
        summary.update(accuracy_memo_hits=memo.hits, accuracy_memo_misses=memo.misses)
        log.info("search: %d subnet accuracies looked up in %s, %d measured", memo.hits, memo.path, memo.misses)
        push_accuracies(tracker, memo)
        memo.close()
    _log_search(tracker, result, best, summary, device, Path(ctx.output_dir) / "search")
    if memo is not None:
        atomic_write_text(Path(ctx.output_dir) / "search" / MEMO_FILE, json.dumps(found.to_json(), default=str))
        tracker.log_artifact(str(Path(ctx.output_dir) / "search" / MEMO_FILE))
    from tinyflow.metrics_vocabulary import figures, intervals, record  # the shared names (docs/design.md §12)

    searched = figures("searched", sram_peak=best["peak_sram"], sram_arena=check.get("plan_arena_bytes"))
    searched |= figures("searched", flash=best["flash"], accuracy_float=supernet_best)
    searched |= intervals("searched", n=n_val, accuracy_float=supernet_best)
    record(ctx, tracker, "search", searched, prefix="searched")
    log.info(
        "search: %s chose an arch with val accuracy %s (from the %s), peak SRAM %d B (arena %d B), %.2f M MACs, "
        "schedule %s",
        strategy.name,
        format_accuracy(supernet_best, n_val, digits=2),
        source,
        best["peak_sram"],
        check["plan_arena_bytes"],
        best["macs"] / 1e6,
        check["schedule_used"],
    )
    log.info("search: schedule %s — %s", check["schedule_used"], check["schedule_reason"])
    ctx.arch = best_arch.to_dict()
    ctx.schedule_options = dict(check.get("schedule", best["schedule"]))  # what the verified plan runs
    ctx.metrics["search_val_accuracy"] = supernet_best
    ctx.metrics.update(ci_metrics("search_val_accuracy", supernet_best, n_val))
    if n_val is not None:
        ctx.metrics["search_val_images"] = float(n_val)
    ctx.metrics["search_peak_sram_bytes"] = float(best["peak_sram"])
    ctx.metrics["search_arena_bytes"] = float(check["plan_arena_bytes"])
    ctx.extra["search"] = {k: v for k, v in summary.items() if not isinstance(v, Arch)}
    ctx.artifacts["search_dir"] = str(Path(ctx.output_dir) / "search")
    return ctx


def val_images_budget(settings: SearchSettings, resolutions: Sequence[int]) -> int | None:
    """The val images each subnet is scored on: `strategy.val_images`, a budget in compute when
    `strategy.val_images_at_resolution` is set — images × pixels of that many images at that resolution, so a
    larger resolution (mean square of the supernet's) scores fewer (tinyflow.training.budget's rule)."""
    if settings.val_images is None or settings.val_images_at_resolution is None:
        return settings.val_images
    return epoch_budget(settings.val_images, settings.val_images_at_resolution, resolutions).effective


def val_split_label(n_images: int | None, n_split: int | None) -> str:
    """The accuracy memo's name for "val accuracy on the first `n_images`": `val` for the whole split, so the
    memo rows of runs that score on all of it stay shared."""
    return "val" if n_images is None or n_images == n_split else f"val[:{n_images}]"


def _memo_fallback(
    found: MemoCandidates,
    searched: float,
    costs: SchedulerCosts,
    device: Any,
    plan_of: Callable[[Arch, dict[str, int]], Any],
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The most accurate memo subnet that fits the budgets, beats the search's choice (measured val accuracy
    `searched`) and whose placed arena fits (`choose_verified`), with its check; None when there is none."""
    better = [r for r in found.rows if r["accuracy"] > searched]
    if not better:
        return None
    try:
        return choose_verified(SimpleNamespace(evaluated=better), costs, device, plan_of)
    except BudgetError:  # none of them has an arena layout within the budget
        return None


def _row_json(r: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in r.items() if k != "arch"}, "genome": r["arch"].genome}


def _arch_title(summary: dict[str, Any], arch: Arch) -> str:
    kib = summary["plan_arena_bytes"] / 1024
    return f"searched at {arch.resolution}²: {summary['schedule_used']}, arena {kib:.1f} KiB"


def _log_search(
    tracker: Any, result: Any, best: dict[str, Any], summary: dict[str, Any], device: Any, out: Path
) -> None:
    import matplotlib.pyplot as plt

    from tinyflow.search.arch_figure import arch_figure
    from tinyflow.search.plots import history_figure, pareto_figure

    for h in result.history:
        tracker.log_metrics(
            {k: float(h[k]) for k in ("best_so_far", "best_in_step", "mean_in_step", "n_evaluations")},
            step=int(h["step"]),
        )
    tracker.log_metrics(
        {k: float(v) for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    )
    atomic_write_text(out / "best_arch.json", best["arch"].to_json())
    atomic_write_text(out / "search_summary.json", json.dumps(summary, indent=2, default=str))
    atomic_write_text(out / "pareto.json", json.dumps([_row_json(r) for r in result.pareto], default=str))
    atomic_write_text(out / "history.json", json.dumps(result.history))
    for name in ("best_arch.json", "search_summary.json", "pareto.json", "history.json"):
        tracker.log_artifact(str(out / name))
    figs = {
        "search_pareto.png": pareto_figure(
            result.evaluated,
            result.pareto,
            device.sram_budget_bytes,
            best,
            ylabel=f"accuracy ({summary['objective']})",
        ),
        "search_history.png": history_figure({summary["strategy"]: result.history}),
        "search_arch.png": arch_figure(best["arch"], summary["patch_blocks"], _arch_title(summary, best["arch"])),
    }
    for name, fig in figs.items():
        fig.savefig(out / name, dpi=120)
        tracker.log_figure(fig, name)
        plt.close(fig)
