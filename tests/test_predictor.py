"""The accuracy predictor ranks held-out archs of a toy objective, and reports the ranking it reaches."""

from __future__ import annotations

import random

import pytest

from search_toys import toy_accuracy
from tinyflow.arch.space import MBConvSpace
from tinyflow.errors import ConfigError
from tinyflow.search.predictor import AccuracyPredictor, PredictorConfig, sample_pairs

SPACE = MBConvSpace(width_mult=0.5, resolution=64, num_classes=10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_predictor_ranks_held_out_archs():
    archs, accs = sample_pairs(SPACE.sample, toy_accuracy, 300, seed=0)
    assert len({a.key() for a in archs}) == 300
    pred = AccuracyPredictor(SPACE.encode, PredictorConfig(n_samples=300, epochs=60, seed=0))
    m = pred.fit(archs, accs)
    assert m["predictor_test_pairs"] == 300 and m["predictor_folds"] == 5  # every pair predicted once, unseen
    assert m["predictor_train_pairs"] == 240
    assert m["predictor_spearman"] > 0.8 and m["predictor_kendall"] > 0.6
    assert m["predictor_spearman_ci95_low"] < m["predictor_spearman"] < m["predictor_spearman_ci95_high"]
    # an unseen arch: prediction close to the truth on the target's scale
    fresh = SPACE.sample(random.Random(999))
    assert abs(pred.predict(fresh) - toy_accuracy(fresh)) < 0.05
    assert pred.predict_many([fresh]).shape == (1,)


def test_shuffled_labels_do_not_rank():
    archs, accs = sample_pairs(SPACE.sample, toy_accuracy, 200, seed=1)
    random.Random(0).shuffle(accs)
    m = AccuracyPredictor(SPACE.encode, PredictorConfig(n_samples=200, epochs=30, seed=0)).fit(archs, accs)
    assert abs(m["predictor_spearman"]) < 0.4


def test_predictor_config_errors():
    with pytest.raises(ConfigError, match="folds"):
        PredictorConfig(folds=1)
    with pytest.raises(ConfigError, match="folds"):
        PredictorConfig(n_samples=10, folds=6)
    with pytest.raises(ConfigError, match="n_samples"):
        PredictorConfig(n_samples=5)


def test_fits_on_two_worker_processes_give_the_same_predictor():
    """The cross-validation's fits and the final one are independent: on two forked workers (`tinyflow.forked`)
    they give the numbers one process gives, metrics and predictions alike."""
    archs, accs = sample_pairs(SPACE.sample, toy_accuracy, 60, seed=2)
    config = PredictorConfig(n_samples=60, epochs=20, seed=0)
    one, two = AccuracyPredictor(SPACE.encode, config), AccuracyPredictor(SPACE.encode, config)
    assert one.fit(archs, accs, workers=1) == two.fit(archs, accs, workers=2)
    fresh = [SPACE.sample(random.Random(k)) for k in range(5)]
    assert one.predict_many(fresh).tolist() == two.predict_many(fresh).tolist()
