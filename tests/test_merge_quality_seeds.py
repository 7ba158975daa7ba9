"""benchmarks/merge_quality_seeds.py: pass counts and ranges over scoring draws, and the
refusal of runs that are not the same benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import merge_quality_seeds as mq  # noqa: E402


def _row(split, a, n, ok, w1, sig, std):
    return {"split": split, "amplitude": a, "spectral_index": n, "all_pass": ok,
            "pdf_w1_ratio": w1, "pk_worst_sigma": sig, "std_ratio": std}  # fmt: skip


def _run(ok_blue: bool, w1: float) -> dict:
    return {"per_condition": [
        _row("train", 1.0, -1.0, ok_blue, w1, 3.0, 1.006),
        _row("train", 1.0, -2.0, True, 0.8, 2.0, 1.0),
        _row("heldout", 2.0, -1.25, False, 5.0, 3.7, 1.02),
    ]}  # fmt: skip


def test_counts_and_ranges(tmp_path: Path, capsys) -> None:
    runs = [_run(False, 3.4), _run(True, 1.5), _run(False, 2.2)]
    out = mq.merge(runs)
    blue = out["conditions"][0]
    assert (blue["passes"], blue["draws"]) == (1, 3)
    assert blue["pdf_w1_ratio"] == [1.5, 3.4]
    assert out["conditions"][1]["passes"] == 3 and out["conditions"][2]["passes"] == 0
    assert [r["train"] + r["heldout"] for r in out["per_run"]] == [1, 2, 1]
    paths = []
    for i, r in enumerate(runs):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(r))
        paths.append(str(p))
    assert mq.main([*paths, "--json", str(tmp_path / "m.json")]) == 0
    text = capsys.readouterr().out
    assert "1/3" in text and "all targets per draw: 1, 2, 1 of 3 (mean 1.3)" in text
    assert json.loads((tmp_path / "m.json").read_text())["conditions"][0]["passes"] == 1


def test_refuses_different_benchmarks(tmp_path: Path) -> None:
    other = _run(True, 1.0)
    other["per_condition"][0]["spectral_index"] = -1.5
    with pytest.raises(ValueError, match="other conditions"):
        mq.merge([_run(True, 1.0), other])
    with pytest.raises(ValueError, match="no per_condition"):
        mq.merge([{"summary": {}}])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert mq.main([str(bad)]) == 2


def test_binomial_cdf_closed_forms() -> None:
    assert mq.binomial_cdf(0, 3, 0.9) == pytest.approx(0.1**3)
    assert mq.binomial_cdf(1, 3, 0.5) == pytest.approx(0.5)  # (1 + 3) / 8
    assert mq.binomial_cdf(3, 3, 0.3) == pytest.approx(1.0)


def test_oracle_comparison_flags_the_models_own_misses(tmp_path: Path, capsys) -> None:
    model = mq.merge([_run(False, 3.4), _run(False, 2.5), _run(False, 2.2)])
    oracle = mq.merge([_run(True, 1.0)] * 6 + [_run(False, 2.1)])
    for r in oracle["conditions"]:  # the perfect model passes held-out (2, -1.25) too
        r["passes"] = 7 if r["split"] == "heldout" else r["passes"]
    cmp = mq.compare_with_oracle(model, oracle)
    blue, red, held = cmp["conditions"]
    assert (blue["oracle_passes"], blue["oracle_draws"]) == (6, 7)
    assert blue["oracle_rate"] == pytest.approx(7 / 9)
    assert blue["tail"] == pytest.approx((2 / 9) ** 3)  # 0 of 3 under p = 7/9
    assert red["tail"] == pytest.approx(1.0)
    assert held["tail"] == pytest.approx((1 / 9) ** 3)
    assert cmp["model_mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="other conditions"):
        other = mq.merge([_run(True, 1.0)])
        other["conditions"] = other["conditions"][:2]
        mq.compare_with_oracle(model, other)
    paths = {}
    for name, runs in (("m", [_run(False, 3.4), _run(False, 2.5)]), ("o", [_run(True, 1.0)] * 4)):
        paths[name] = []
        for i, r in enumerate(runs):
            p = tmp_path / f"{name}{i}.json"
            p.write_text(json.dumps(r))
            paths[name].append(str(p))
    assert mq.main([*paths["m"], "--oracle", *paths["o"]]) == 0
    text = capsys.readouterr().out
    assert "perfect model (4 draws): mean 2.0 of 3" in text
    assert "train (1, -1) 0/2 vs 4/4, tail 0.028" in text  # (1/6)² = 0.0278
