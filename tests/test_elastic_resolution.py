"""Resolution in the search (MCUNetV2): an elastic-resolution space, the OFA trainer drawing one resolution per
batch, subnets measured at their resolution with BatchNorm recalibrated there, the genome operators and the
predictor's encoding carrying it, and the space stage choosing a resolution range."""

from __future__ import annotations

import random

import pytest
import torch

from tiny_spaces import tiny_space
from tinyflow.arch.space import ArchOutsideSpaceError
from tinyflow.search.problem import SearchProblem
from tinyflow.supernet import Supernet
from tinyflow.tracking import NullTracker
from tinyflow_plugins.data import DigitsData
from tinyflow_plugins.trainers.ofa import OfaModule, OfaOptions, OfaTrainer, parse_phases

torch.set_num_threads(1)
RS = (12, 16, 20)
PHASES = [
    {"name": "full", "epochs": 1, "lr": 0.05, "kernel": [5], "depth": [2], "expand": [3]},
    {"name": "shrink", "epochs": 1, "lr": 0.02, "random_subnets": 1},
]


@pytest.fixture(scope="module")
def data() -> DigitsData:
    d = DigitsData(batch_size=32, eval_batch_size=100, max_train_samples=160, max_eval_samples=100, seed=0)
    d.setup()
    return d


def test_elastic_space_genomes_carry_their_resolution():
    space = tiny_space().with_resolutions([20, 12, 16])
    assert space.resolutions == RS and space.resolution == 20 and space.elastic_resolution
    rng = random.Random(0)
    seen = {space.sample(rng).resolution for _ in range(60)}
    assert seen == set(RS)
    arch = space.sample(random.Random(1))
    assert arch.genome["resolution"] == arch.resolution
    assert space.from_genome(arch.genome) == arch
    one_hot = space.encode(arch)[-len(RS) :]
    assert one_hot == [1.0 if r == arch.resolution else 0.0 for r in RS]
    assert len(space.encode(arch)) == len(tiny_space().encode(arch)) + len(RS)
    with pytest.raises(ArchOutsideSpaceError, match="resolution = 24"):
        space.build(*[arch.genome[k] for k in ("depths", "kernels", "expands")], resolution=24)
    # a fixed-resolution space draws the very genomes it drew before resolution was a gene
    fixed = tiny_space()
    assert fixed.sample(random.Random(5)) == tiny_space().sample(random.Random(5))
    assert "resolution" not in fixed.sample_genome(random.Random(5))


def test_genome_operators_search_the_resolution():
    space = tiny_space().with_resolutions(RS)
    problem = SearchProblem(space, lambda a: 0.0, lambda a, o: None)  # type: ignore[arg-type, return-value]
    rng = random.Random(0)
    a, b = problem.sample(rng), problem.sample(rng)
    mutated = {problem.mutate(a, rng, 1.0).arch.resolution for _ in range(40)}
    assert mutated == set(RS)
    crossed = {problem.crossover(a, b, rng).arch.resolution for _ in range(40)}
    assert crossed == {a.arch.resolution, b.arch.resolution}
    assert {problem.mutate(a, rng, 0.0).arch.resolution for _ in range(5)} == {a.arch.resolution}


def test_one_resolution_per_batch_for_every_subnet_of_the_step(data):
    space = tiny_space().with_resolutions(RS)
    phases = parse_phases(PHASES, space)
    module = OfaModule(space, phases, OfaOptions(seed=3), data)
    drawn = set()
    for step in range(12):
        archs = module.step_archs(phases[1], step)
        assert len({a.resolution for a in archs}) == 1
        assert all(a.genome["resolution"] == a.resolution for a in archs)
        drawn.add(archs[0].resolution)
    assert drawn == set(RS)


@pytest.mark.slow
def test_trained_with_resolutions_measured_at_each_with_bn_recalibrated_there(tmp_path, data):
    trainer = OfaTrainer(
        phases=PHASES, progress=False, recalib_batches=2, seed=0, limit_train_batches=3, resolutions=list(RS)
    )
    out = trainer.fit(tiny_space(), data, str(tmp_path), NullTracker())
    supernet = Supernet.load(out.checkpoint, data)
    assert supernet.space.resolutions == RS  # the checkpoint's space carries the choices; search picks within
    arch = supernet.space.max_arch()
    small = arch.__class__(**{**arch.__dict__, "resolution": 12, "genome": {**arch.genome, "resolution": 12}})
    assert [b.shape[-1] for b in supernet.calibration_batches(12)] == [12] * len(supernet.calibration_batches(12))
    acc12, acc20 = supernet.evaluate(small, "val"), supernet.evaluate(arch, "val")
    assert 0.0 <= acc12 <= 1.0 and 0.0 <= acc20 <= 1.0
    # measured at its own resolution: the extracted network at 12 px gives the same accuracy
    from tinyflow.supernet.evaluation import data_resolution
    from tinyflow.training.evaluation import evaluate_accuracy

    net = supernet.extract(small)
    with data_resolution(data, 12, supernet.space.resolution):
        assert evaluate_accuracy(net, data.val_dataloader()) == pytest.approx(acc12, abs=1e-6)


def test_space_stage_resolution_range():
    from types import SimpleNamespace

    from tinyflow.stages.space import resolution_range

    def cell(w, r, share):
        return SimpleNamespace(width_mult=w, resolution=r, fit_share=share)

    best = cell(0.5, 40, 0.9)
    result = SimpleNamespace(
        cells=[cell(0.5, 32, 1.0), best, cell(0.5, 48, 0.6), cell(0.5, 64, 0.3), cell(0.25, 64, 1)]
    )
    assert resolution_range(result, best, 0.5) == [32, 40, 48]
    assert resolution_range(result, best, 0.0) == [32, 40, 48, 64]
