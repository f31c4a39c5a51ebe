"""Confidence intervals of accuracies (src/tinyflow/confidence.py) against published values."""

from __future__ import annotations

import pytest

from tinyflow.confidence import (
    Interval,
    ci_metrics,
    difference,
    difference_text,
    distinguishable,
    format_accuracy,
    interval,
    wilson,
)


def test_wilson_matches_newcombe_1998_table() -> None:
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson)
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert wilson(0, 20) == pytest.approx((0.0, 0.1611), abs=5e-5)
    assert wilson(1, 29) == pytest.approx((0.0061, 0.1718), abs=5e-5)
    low, high = wilson(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=5e-5)


def test_newcombe_difference_matches_the_paper() -> None:
    # Newcombe (1998), "Interval estimation for the difference between independent proportions", method 10
    d, low, high = difference(56 / 70, 70, 48 / 80, 80)
    assert d == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    _, low, high = difference(9 / 10, 10, 3 / 10, 10)
    assert (low, high) == pytest.approx((0.1705, 0.8090), abs=5e-5)


def test_the_printed_interval() -> None:
    assert Interval.of(0.888, 500).text() == "88.8 % (95 % CI 85.7–91.3, Wilson, n = 500)"
    assert format_accuracy(0.888, 500) == "88.8 % (95 % CI 85.7–91.3, Wilson, n = 500)"
    assert format_accuracy(0.888, None) == "88.8 %"
    assert format_accuracy(None, 500) == "—"
    assert interval(0.5, 0) is None


def test_at_500_images_a_point_is_noise_and_at_2000_five_points_are_not() -> None:
    assert not distinguishable(0.902, 500, 0.896, 500)  # the largest vs smallest subnet
    assert "cannot be told apart" in difference_text(0.902, 500, 0.896, 500, "drop")
    assert distinguishable(0.95, 2000, 0.90, 2000)
    assert "a real difference" in difference_text(0.95, 2000, 0.90, 2000)
    # the standard error of a 90 % accuracy: about 1.3 points at n = 500, about 0.5 at n = 3600
    assert Interval.of(0.9, 500).half_width == pytest.approx(1.96 * 0.0134, abs=2e-3)
    assert Interval.of(0.9, 3600).half_width / 1.96 <= 0.0051


def test_metrics_names() -> None:
    m = ci_metrics("accuracy_int8", 0.888, 500)
    assert set(m) == {"accuracy_int8_ci95_low", "accuracy_int8_ci95_high"}
    assert m["accuracy_int8_ci95_low"] < 0.888 < m["accuracy_int8_ci95_high"]
    assert ci_metrics("accuracy_int8", 0.888, None) == {}
