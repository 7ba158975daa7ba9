"""``condition_accuracy``: does each generated sample sit nearest to its own condition's truth?"""

from __future__ import annotations

import numpy as np
import pytest

from rho_core.errors import ConfigError
from rho_core.evaluation import condition_accuracy


def _truth(n: int = 5, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 1, size))


def test_exact_and_slightly_noisy_samples_score_one() -> None:
    t = _truth()
    assert condition_accuracy(t, t) == 1.0
    noisy = t + 0.1 * np.random.default_rng(1).normal(size=t.shape)
    assert condition_accuracy(noisy, t) == 1.0


def test_swapped_and_ignored_conditions_score_low() -> None:
    t = _truth()
    swapped = t[[1, 0, 2, 3, 4]]  # samples 0 and 1 got each other's field
    assert condition_accuracy(swapped, t) == pytest.approx(3 / 5)
    ignored = np.repeat(t[2:3], 5, axis=0)  # the condition is ignored: always field 2
    assert condition_accuracy(ignored, t) == pytest.approx(1 / 5)
    assert condition_accuracy(np.zeros_like(t), t) <= 1 / 5  # ties and misses are not hits


def test_shape_errors() -> None:
    t = _truth()
    with pytest.raises(ConfigError, match="matching rows"):
        condition_accuracy(t[:3], t)
    with pytest.raises(ConfigError, match="matching rows"):
        condition_accuracy(t[:1], t[:1])
