"""Hash and continuous conditioning: canonical serialisation, cross-process stability, modules."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from rho_core.conditioning import (
    ConditionerConfig,
    build_conditioner,
    canonical_params,
    hash_embedding,
    params_to_tensor,
)
from rho_core.errors import ConfigError

P = {"l": 5, "m": 2, "amplitude": 0.25, "model": "Y", "flag": True}


def test_hash_embedding_is_the_sha512_bits() -> None:
    e = hash_embedding(P)
    assert e.shape == (512,) and e.dtype == torch.float32
    assert set(e.unique().tolist()) == {-1.0, 1.0}
    digest = hashlib.sha512(canonical_params(P).encode()).digest()
    bits = [(byte >> (7 - k)) & 1 for byte in digest for k in range(8)]
    assert e.tolist() == [2.0 * b - 1.0 for b in bits]
    # roughly balanced bits (a real hash, not ASCII codes of hex digits)
    assert 200 < int((e > 0).sum()) < 312


def test_same_vector_across_key_orders_number_spellings_and_numpy_scalars() -> None:
    ref = hash_embedding({"a": 1, "b": 2.5, "c": 3})
    variants = [
        {"c": 3, "b": 2.5, "a": 1},
        {"a": 1.0, "b": 2.5, "c": 3.0},
        {"a": np.int64(1), "b": np.float64(2.5), "c": np.int32(3)},
        {"a": np.float32(1.0), "b": np.float32(2.5), "c": np.uint8(3)},
        {"a": torch.tensor(1), "b": np.array(2.5), "c": 3},
    ]
    for v in variants:
        assert torch.equal(hash_embedding(v), ref), v
    # float32 scalars mean their shortest decimal; float round-off noise is ignored
    assert torch.equal(hash_embedding({"x": np.float32(0.1)}), hash_embedding({"x": 0.1}))
    assert torch.equal(hash_embedding({"x": 0.1 + 0.2}), hash_embedding({"x": 0.3}))
    assert canonical_params({"b": True, "a": "s"}) == '{"a":"s","b":true}'


def test_different_params_give_different_vectors() -> None:
    base = hash_embedding({"a": 1, "b": 2})
    for other in [
        {"a": 1, "b": 3},
        {"a": 2, "b": 1},
        {"a": 1},
        {"a": 1, "b": 2, "c": 0},
        {"a": 1, "b": "2"},
        {"a": 1.000001, "b": 2},
        {"a": True, "b": 2},
    ]:
        e = hash_embedding(other)
        assert not torch.equal(e, base), other
        assert int((e != base).sum()) > 150  # avalanche: about half the bits flip


def test_fixed_length_for_1_and_20_params() -> None:
    assert hash_embedding({"p0": 0.5}).shape == (512,)
    assert hash_embedding({f"p{i}": i * 0.1 for i in range(20)}).shape == (512,)


def test_same_vector_in_a_separate_process() -> None:
    code = (
        "import numpy as np\n"
        "from rho_core.conditioning import hash_embedding\n"
        "e = hash_embedding({'model': 'Y', 'flag': True, 'amplitude': np.float32(0.25), "
        "'m': np.int64(2), 'l': 5.0})\n"
        "print(''.join('1' if v > 0 else '0' for v in e.tolist()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout.strip()
    here = "".join("1" if v > 0 else "0" for v in hash_embedding(P).tolist())
    assert out == here


@pytest.mark.parametrize(
    "bad",
    [
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": None},
        {"a": [1, 2]},
        {1: 2},
        {"a": {"b": 1}},
        {"a": np.array([1.0, 2.0])},
    ],
)
def test_bad_values_rejected(bad) -> None:
    with pytest.raises(ConfigError):
        hash_embedding(bad)


def test_params_to_tensor_order_and_errors() -> None:
    t = params_to_tensor([{"b": 2, "a": 1}, {"a": np.float32(0.1), "b": 0.5}], ("a", "b"))
    assert t.dtype == torch.float64 and t.shape == (2, 2)
    assert t.tolist() == [[1.0, 2.0], [0.1, 0.5]]
    with pytest.raises(ConfigError, match="unknown parameter.*'c'"):
        params_to_tensor([{"a": 1, "b": 2, "c": 3}], ("a", "b"))
    with pytest.raises(ConfigError, match="missing parameter.*'b'"):
        params_to_tensor([{"a": 1}], ("a", "b"))
    with pytest.raises(ConfigError):
        params_to_tensor([{"a": "x"}], ("a",))
    with pytest.raises(ConfigError):
        params_to_tensor([{"a": float("nan")}], ("a",))


def test_hash_conditioner_rows_match_hash_embedding_and_cache() -> None:
    torch.manual_seed(0)
    cfg = ConditionerConfig("hash", 24, ("l", "m"))
    mod = build_conditioner(cfg)
    params = params_to_tensor(
        [{"l": 5, "m": 2}, {"l": 3, "m": 1}, {"l": 5, "m": 2}], cfg.param_names
    )
    bits = mod.bits(params)
    assert torch.equal(bits[0], hash_embedding({"m": 2, "l": 5}))
    assert torch.equal(bits[1], hash_embedding({"l": 3.0, "m": 1}))
    assert len(mod._cache) == 2
    out = mod(params)
    assert (
        out.shape == (3, 24)
        and torch.allclose(out[0], out[2])
        and not torch.allclose(out[0], out[1])
    )
    # drop → the learned null embedding; every parameter gets a gradient through some path
    drop = torch.tensor([False, True, False])
    out = mod(params, drop)
    assert torch.equal(out[1], mod.null)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())
    assert mod(None, batch_size=4).shape == (4, 24)
    with pytest.raises(ConfigError):
        mod(torch.zeros(2, 3, dtype=torch.float64))


def test_continuous_conditioner_is_smooth_and_deterministic() -> None:
    torch.manual_seed(0)
    cfg = ConditionerConfig("continuous", 32, ("a", "b"), (0.0, -1.0), (2.0, 1.0), 8)
    mod = build_conditioner(cfg)
    # normalisation to [-1, 1]
    u = mod.normalise(torch.tensor([[0.0, -1.0], [2.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(u, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    # features are fixed (no random frequencies): a second instance computes the same features
    torch.manual_seed(123)
    mod2 = build_conditioner(cfg)
    p = torch.rand(5, 2, dtype=torch.float64) * torch.tensor([2.0, 2.0]) - torch.tensor([0.0, 1.0])
    assert torch.equal(mod.features(p), mod2.features(p))
    assert mod.features(p).shape == (5, 2 * (2 * 8 + 1))
    # smooth: small parameter steps give proportionally small embedding changes, and the
    # midpoint embedding lies close to the average of its neighbours
    a = torch.linspace(0.0, 2.0, 401, dtype=torch.float64)
    grid = torch.stack([a, torch.zeros_like(a)], 1)
    with torch.no_grad():
        e = mod(grid)
    steps = (e[1:] - e[:-1]).norm(dim=1)
    span = (e[-1] - e[0]).norm()
    assert steps.max() < 0.1 * span
    second = (e[2:] - 2 * e[1:-1] + e[:-2]).norm(dim=1)
    assert second.max() < 0.2 * steps.max()
    drop = torch.tensor([True] + [False] * 400)
    assert torch.equal(mod(grid, drop)[0], mod.null)


def test_none_conditioner_and_config_validation() -> None:
    mod = build_conditioner(ConditionerConfig("none", 8))
    out = mod(torch.zeros(3, 2, dtype=torch.float64))
    assert out.shape == (3, 8) and torch.equal(out[0], mod.null)
    assert mod(None, drop=torch.zeros(5, dtype=torch.bool)).shape == (5, 8)
    with pytest.raises(ConfigError):
        ConditionerConfig("onehot", 8)
    with pytest.raises(ConfigError):
        ConditionerConfig("continuous", 8, ("a",), (1.0,), (1.0,))
    with pytest.raises(ConfigError):
        ConditionerConfig("continuous", 8, ("a", "b"), (0.0,), (1.0,))
    cfg = ConditionerConfig("continuous", 8, ["a"], [0], [1])
    assert cfg.param_names == ("a",) and ConditionerConfig.from_dict(cfg.to_dict()) == cfg


def test_log_params_embed_the_log_of_a_scale_parameter() -> None:
    cfg = ConditionerConfig(
        "continuous", 16, ("amplitude", "n"), (0.3, -2.5), (3.2, -1.0), 1, log_params=["amplitude"]
    )
    assert cfg.log_params == ("amplitude",) and ConditionerConfig.from_dict(cfg.to_dict()) == cfg
    mod = build_conditioner(cfg)
    a = torch.tensor([0.3, 3.2, (0.3 * 3.2) ** 0.5, 0.5], dtype=torch.float64)
    p = torch.stack([a, torch.full_like(a, -1.75)], 1)
    u = mod.normalise(p).double()
    # ends to ±1, the geometric mean to 0, 0.5 where log puts it (linear would give −0.86)
    expect = 2 * (np.log(0.5) - np.log(0.3)) / (np.log(3.2) - np.log(0.3)) - 1
    assert torch.allclose(u[:, 0], torch.tensor([-1.0, 1.0, 0.0, expect], dtype=torch.float64))
    assert torch.allclose(u[:, 1], torch.zeros(4, dtype=torch.float64))  # n stays linear
    with pytest.raises(ConfigError, match="must be > 0"):
        mod(torch.tensor([[0.0, -1.5]], dtype=torch.float64))
    with pytest.raises(ConfigError, match="not a conditioning parameter"):
        ConditionerConfig("continuous", 8, ("a",), (1.0,), (2.0,), log_params=("b",))
    with pytest.raises(ConfigError, match="log needs values > 0"):
        ConditionerConfig("continuous", 8, ("a",), (0.0,), (2.0,), log_params=("a",))
    with pytest.raises(ConfigError, match="continuous conditioning only"):
        ConditionerConfig("hash", 8, ("a",), log_params=("a",))


def test_log_params_through_the_model_options_and_old_configs() -> None:
    from rho_core.config import ModelOptions
    from rho_core.model import ModelConfig, build_model_config

    opts = ModelOptions(log_params=["amplitude"], base_channels=8, channel_mult=(1,))
    cfg = build_model_config(opts, 2, 1, ["amplitude", "spectral_index"], [0.3, -2.5], [3.2, -1])
    assert cfg.conditioning.log_params == ("amplitude",)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again.conditioning == cfg.conditioning
    old = cfg.to_dict()
    del old["conditioning"]["log_params"]  # a checkpoint written before the option existed
    assert ModelConfig.from_dict(old).conditioning.log_params == ()
    with pytest.raises(ConfigError, match="needs conditioning: continuous"):
        ModelOptions(conditioning="hash", log_params=["amplitude"])
