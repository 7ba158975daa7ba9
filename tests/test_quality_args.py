"""Argument parsing of benchmarks/quality.py (the benchmark itself runs for an hour; not here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import quality  # noqa: E402


def test_probe_timesteps_parse() -> None:
    assert quality._probe_ts("last,900,700") == (None, 900, 700)
    assert quality._probe_ts(" 0, 100 ,last") == (0, 100, None)


@pytest.mark.parametrize("text", ["", ",", "abc", "-5", "1.5"])
def test_probe_timesteps_reject_bad_values(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        quality._probe_ts(text)


def test_samplers_parse() -> None:
    assert quality.parse_samplers("dpmpp:10,ddim:50") == [("dpmpp", 10), ("ddim", 50)]
