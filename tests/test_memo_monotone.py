"""Never worse with more memory (issue 26): two searches of one supernet sharing the accuracy memo, the tighter budget
first; the looser one sees every subnet the tighter one measured that fits it, and does not return a worse subnet."""

from __future__ import annotations

import json
import random

import pytest

from test_search_stage import _device_overrides, _median_layer_peak, compose_cfg, supernet  # noqa: F401 (fixture)
from tinyflow.arch.genome import Arch
from tinyflow.arch.space import MBConvSpace
from tinyflow.context import RunContext
from tinyflow.search.accuracy_memo import AccuracyMemo
from tinyflow.search.memo_seed import arch_of_key, fitting
from tinyflow.search.problem import Budgets, Costs, SearchProblem


def test_a_memo_key_rebuilds_its_arch_in_the_space_and_only_there() -> None:
    space = MBConvSpace(width_mult=0.5, resolution=16).with_resolutions([12, 16])
    rng = random.Random(0)
    for _ in range(50):
        arch = space.sample(rng)
        assert arch_of_key(space, arch.key()).key() == arch.key()
    assert arch_of_key(MBConvSpace(width_mult=0.25, resolution=16), arch.key()) is None  # another supernet's
    assert arch_of_key(space, "not json") is None


def test_fitting_keeps_what_the_budget_allows_best_first() -> None:
    space = MBConvSpace(width_mult=0.5, resolution=16)
    rng = random.Random(1)
    archs = [space.sample(rng) for _ in range(12)]

    def cost(arch: Arch, options: dict[str, int]) -> Costs:
        return Costs(peak_sram=sum(b.hidden for b in arch.blocks), flash=1, macs=1)

    peaks = sorted(cost(a, {}).peak_sram for a in archs)
    problem = SearchProblem(space, lambda a: 0.0, cost, Budgets(sram_bytes=peaks[5]))
    measured = [(a.key(), i / 100) for i, a in enumerate(archs)] + [("{}", 1.0)]
    found = fitting(problem, measured)
    assert found.read == 13 and found.foreign == 1
    assert {r["arch"].key() for r in found.rows} == {a.key() for a in archs if cost(a, {}).peak_sram <= peaks[5]}
    assert [r["accuracy"] for r in found.rows] == sorted((r["accuracy"] for r in found.rows), reverse=True)
    assert problem.n_evaluations == 0  # read from the memo, not measured


@pytest.mark.slow
def test_a_looser_budget_never_returns_a_worse_subnet(supernet, tmp_path) -> None:  # noqa: F811 (the fixture)
    space, ckpt = supernet
    tight = _median_layer_peak(space)
    shared = [f"cache.dir={tmp_path / 'cache'}", "cache.search=true", "scheduler=layer", "seed=0"]
    # the predictor objective: the search ranks by a predictor, so its choice is not always the best it measured
    shared += ["strategy.objective=predictor", "strategy.predictor.n_samples=24", "strategy.n_evaluations=20"]
    from tinyflow.stages.search import MEMO_FILE, run

    contexts = {}
    for name, sram in (("tight", tight), ("loose", 2 * tight)):
        cfg = compose_cfg(*_device_overrides(sram), *shared)
        out = tmp_path / name
        contexts[name] = run(cfg, RunContext(output_dir=str(out), supernet_checkpoint=ckpt))

    tight_ctx, loose_ctx = contexts["tight"], contexts["loose"]
    # one memo, shared by both searches of the supernet
    memos = list((tmp_path / "cache" / "search").glob("*.sqlite"))
    assert len(memos) == 1
    memo = AccuracyMemo(memos[0])
    measured = dict(memo.items("val"))
    memo.close()
    tight_arch = Arch.from_dict(tight_ctx.arch)
    assert measured[tight_arch.key()] == pytest.approx(tight_ctx.metrics["search_val_accuracy"])
    # every subnet the tighter search measured fits the looser budget: each is one of the looser search's candidates
    candidates = json.loads((tmp_path / "loose" / "search" / MEMO_FILE).read_text())
    keys = {space.from_genome(c["genome"]).key() for c in candidates}
    assert tight_arch.key() in keys
    assert loose_ctx.extra["search"]["memo_subnets_fitting"] >= len(keys) > 0
    # never worse with more memory
    assert loose_ctx.metrics["search_val_accuracy"] >= tight_ctx.metrics["search_val_accuracy"]
    assert loose_ctx.extra["search"]["result_source"] in ("search", "accuracy memo")
    # the val accuracy with its interval over the val images
    n = loose_ctx.metrics["search_val_images"]
    assert n > 0
    low, high = loose_ctx.metrics["search_val_accuracy_ci95_low"], loose_ctx.metrics["search_val_accuracy_ci95_high"]
    assert low <= loose_ctx.metrics["search_val_accuracy"] <= high
