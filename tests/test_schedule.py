"""The accumulated portions and the growing frozen set (magnitude and random partitions)."""

import numpy as np
import pytest

from inq_onnx.errors import ConfigError
from inq_onnx.schedule import check_portions, default_portions, grow_frozen_mask, parse_portions


def test_paper_schedules():
    assert default_portions(5) == (0.5, 0.75, 0.875, 1.0)
    assert default_portions(4) == (0.3, 0.5, 0.8, 0.9, 0.95, 1.0)
    assert default_portions(3) == (0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
    assert default_portions(2) == (0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 1.0)
    assert default_portions(8) == default_portions(5)


def test_parse_portions():
    assert parse_portions("0.5,0.75,0.875,1") == (0.5, 0.75, 0.875, 1.0)


@pytest.mark.parametrize("text, message", [
    ("0.5,0.4,1", "increase strictly"), ("0.5,0.9", "last portion must be 1"), ("0,1", r"lie in \(0, 1\]"),
    ("a,1", "comma-separated numbers"), ("", "must not be empty"), ("0.5,1.5", r"lie in \(0, 1\]"),
])
def test_bad_portions(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_portions(text)


def test_magnitude_freezes_largest_unfrozen_and_never_thaws():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(100).astype(np.float32)
    frozen = np.zeros(100, bool)
    first = grow_frozen_mask(w, frozen, 0.5, "magnitude", rng)
    assert first.sum() == 50
    assert np.abs(w[first]).min() >= np.abs(w[~first]).max()
    # Retraining moves weights; the next step ranks only the unfrozen ones and keeps the frozen set.
    moved = w.copy()
    moved[first] *= 0.01  # frozen weights now small: re-ranking everything would thaw them
    second = grow_frozen_mask(moved, first, 0.75, "magnitude", rng)
    assert second.sum() == 75 and np.all(second[first])
    newly = second & ~first
    assert np.abs(moved[newly]).min() >= np.abs(moved[~second]).max()
    assert grow_frozen_mask(moved, second, 1.0, "magnitude", rng).all()


def test_random_strategy_is_monotone_and_seeded():
    w = np.arange(40, dtype=np.float32)
    a = grow_frozen_mask(w, np.zeros(40, bool), 0.3, "random", np.random.default_rng(1))
    b = grow_frozen_mask(w, np.zeros(40, bool), 0.3, "random", np.random.default_rng(1))
    assert a.sum() == 12 and np.array_equal(a, b)
    assert not np.array_equal(a, w >= 28)  # not the magnitude choice (the 12 largest)
    assert np.all(grow_frozen_mask(w, a, 0.6, "random", np.random.default_rng(2))[a])


def test_unknown_strategy():
    with pytest.raises(ConfigError, match="strategy must be one of"):
        grow_frozen_mask(np.ones(3), np.zeros(3, bool), 0.5, "smallest", np.random.default_rng())


def test_check_portions_returns_floats():
    assert check_portions([1]) == (1.0,)
