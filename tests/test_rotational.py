"""Rigid-rotor physics against closed forms, the store and the normalisation of line spectra."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rho_core.data import rotational as R
from rho_core.errors import ConfigError

ASYM = (9000.0, 4000.0, 2500.0)  # MHz, κ = −0.69


def _j_strengths(j, jp, A, B, C):
    (_, v), (_, vp) = R.levels(j, A, B, C), R.levels(jp, A, B, C)
    return R.strength_matrices(j, jp, v, vp)


def test_clebsch_orthonormal():
    # Σ_{J'} ⟨J K; 1 q | J' K+q⟩² = 1 and the J'=J+1, K=0, q=0 closed form
    for j in range(0, 6):
        k = np.arange(-j, j + 1)
        for q in (-1, 0, 1):
            tot = sum(R.clebsch_1(j, k, q, jp) ** 2 for jp in (j - 1, j, j + 1) if jp >= 0)
            assert np.allclose(tot, 1.0)
        assert R.clebsch_1(j, np.array([0]), 0, j + 1)[0] == pytest.approx(
            math.sqrt((j + 1) / (2 * j + 1))
        )


def test_linear_rotor_lines_at_2B_J_plus_1():
    B = 5000.0
    tr = R.transitions(math.inf, B, B, 12)
    order = np.argsort(tr.frequency)
    f, jl, s = tr.frequency[order], tr.j_lower[order], tr.s_a[order]
    assert np.allclose(f, 2 * B * (jl + 1))
    assert np.allclose(s, jl + 1)  # S(J → J+1) = J + 1
    assert np.allclose(tr.s_b, 0) and np.allclose(tr.s_c, 0)


@pytest.mark.parametrize(
    ("abc", "axis_const"),
    [((9000.0, 3000.0, 3000.0), "prolate"), ((5000.0, 5000.0, 2000.0), "oblate")],
)
def test_symmetric_top_limits_and_k_structure(abc, axis_const):
    A, B, C = abc
    for j in range(6):
        e, _ = R.levels(j, A, B, C)
        K = np.arange(-j, j + 1)
        ref = B * j * (j + 1) + ((A - B) if axis_const == "prolate" else (C - B)) * K**2
        assert np.allclose(e, np.sort(ref), atol=1e-7)
    # μ along the symmetry axis: J → J+1 lines at 2B(J+1) for every K, S = [(J+1)² − K²]/(J+1)
    g = "a" if axis_const == "prolate" else "c"
    other = 3000.0 if axis_const == "prolate" else 5000.0
    tr = R.transitions(A, B, C, 8)
    s = getattr(tr, f"s_{g}")
    on = s > 1e-10
    assert np.allclose(tr.frequency[on], 2 * other * (tr.j_lower[on] + 1))
    for j in range(8):
        sel = on & (tr.j_lower == j)
        # summed over the K components (each |K| > 0 twice): Σ_K [(J+1)² − K²]/(J+1)
        K = np.arange(-j, j + 1)
        assert s[sel].sum() == pytest.approx(((j + 1) ** 2 - K**2).sum() / (j + 1))
        # and per K: group by the lower-level energy
        el = tr.e_lower[sel]
        kk = np.sqrt(np.abs((el - B * j * (j + 1)) / ((A - B) if g == "a" else (C - B))))
        for k in range(j + 1):
            mine = np.isclose(kk, k, atol=1e-6)
            want = (1 if k == 0 else 2) * ((j + 1) ** 2 - k**2) / (j + 1)
            assert s[sel][mine].sum() == pytest.approx(want)


def test_near_limits_converge_to_symmetric_tops():
    # κ → −1 (B → C) and κ → +1 (A → B): energies approach the symmetric-top forms, with the
    # first-order K-doubling (B − C)·J(J+1)/4 of the K = 1 pair as the largest deviation
    A, B = 9000.0, 3000.0
    K = np.arange(-4, 5)
    for eps in (1.0, 1e-3):
        e, _ = R.levels(4, A, B, B - eps)
        ref = np.sort((B - eps / 2) * 20 + (A - (B - eps / 2)) * K**2)
        assert np.max(np.abs(e - ref)) == pytest.approx(eps * 20 / 4, rel=1e-3)
        e, _ = R.levels(4, B + eps, B, 1000.0)  # near-oblate
        ref = np.sort((B + eps / 2) * 20 + (1000.0 - (B + eps / 2)) * K**2)
        assert np.max(np.abs(e - ref)) == pytest.approx(eps * 20 / 4, rel=1e-2)
    assert R.kappa(A, B, B) == pytest.approx(-1.0)
    assert R.kappa(B, B, 1000.0) == pytest.approx(1.0)


def test_line_strength_sum_rule():
    # Σ_{J'=J−1..J+1} Σ_τ' S_g(Jτ → J'τ') = 2J + 1 for every level τ and component g
    A, B, C = ASYM
    for j in range(1, 7):
        tot = {g: np.zeros(2 * j + 1) for g in "abc"}
        for jp in (j - 1, j, j + 1):
            s = _j_strengths(j, jp, A, B, C)
            for g in "abc":
                tot[g] += s[g].sum(axis=0)
        for g in "abc":
            assert np.allclose(tot[g], 2 * j + 1), (j, g, tot[g])


def test_selection_rules_and_lowest_lines():
    A, B, C = ASYM
    want = {"a": (0, 1), "b": (1, 1), "c": (1, 0)}  # (ΔK_a, ΔK_c) mod 2
    n_seen = 0
    for j in range(0, 6):
        for jp in (j, j + 1):
            s = _j_strengths(j, jp, A, B, C)
            ka, kc = R.ka_kc(j)
            kap, kcp = R.ka_kc(jp)
            for g in "abc":
                r, c = np.nonzero(s[g] > 1e-10)
                n_seen += r.size
                assert np.all((kap[r] - ka[c]) % 2 == want[g][0])
                assert np.all((kcp[r] - kc[c]) % 2 == want[g][1])
    assert n_seen > 100
    # from the ground state 0_00: a-type 1_01 at B + C, b-type 1_10 at A + C, c-type 1_11 at A + B
    tr = R.transitions(A, B, C, 2)
    for g, nu in (("a", B + C), ("b", A + C), ("c", A + B)):
        s = getattr(tr, f"s_{g}")
        sel = (tr.j_lower == 0) & (s > 1e-10)
        assert np.allclose(tr.frequency[sel], [nu])
        assert np.allclose(s[sel], [1.0])


def test_intensity_formula_and_partition_function():
    B, T = 5000.0, 10.0
    jm = R.j_max_for(math.inf, B, B, T)
    tr = R.transitions(math.inf, B, B, jm)
    j = np.arange(jm + 1)
    q = np.sum((2 * j + 1) * np.exp(-R.H_OVER_K * B * j * (j + 1) / T))
    assert tr.partition_function(T) == pytest.approx(q, rel=1e-12)
    # high-temperature limit of a linear rotor: Q ≈ kT/(hB) + 1/3
    assert q == pytest.approx(T / (R.H_OVER_K * B) + 1 / 3, rel=2e-3)
    i = tr.intensities(T, (2.0, 0.0, 0.0))
    k = np.argmin(tr.frequency)  # J = 0 → 1 at 2B
    boltz = 1 - math.exp(-R.H_OVER_K * 2 * B / T)
    assert i[k] == pytest.approx(R.JPL_CONST * 2 * B * 1.0 * 4.0 * boltz / q)


def test_spectrum_area_equals_line_intensities():
    grid = R.Grid(2000.0, 26000.0, 4096)
    s = R.rotational_spectrum(*ASYM, 5.0, (1.0, 0.5, 0.2), grid)
    inner = (s.frequency > grid.f_min + 50) & (s.frequency < grid.f_max - 50)
    edge = s.intensity[~inner].sum()
    area = s.values.sum() * grid.step
    assert area == pytest.approx(s.intensity.sum(), rel=1e-6, abs=edge + 1e-30)
    assert np.all(np.diff(s.frequency) > 0)
    # Voigt sampled at points keeps the area too (tails beyond the window aside)
    v = R.rotational_spectrum(*ASYM, 5.0, (1.0, 0.5, 0.2), grid, profile="voigt", lorentz_hwhm=0.5)
    assert v.values.sum() * grid.step == pytest.approx(s.intensity.sum(), rel=0.02)


def test_store_round_trip(tmp_path):
    from rho_core.data.normalization import Normalizer
    from rho_core.data.store import open_store

    grid = R.Grid(2000.0, 8000.0, 512)
    cond = R.random_conditions(R.random_rotors(2, seed=3), 3, seed=4)
    path = R.generate_rotational_store(tmp_path / "s.zarr", cond, grid)
    s = open_store(path)
    assert s.kind == "rotational_spectrum" and s.spatial_dims == 1
    assert s.field_shape == (1, 512) and s.n == 6 and list(s.param_names) == list(R.PARAM_NAMES)
    assert np.allclose(s.params[:], cond)
    assert R.grid_of(path) == grid
    lines = R.read_lines(path)
    assert len(lines) == 6
    for i, (f, inten) in enumerate(lines):
        again = R.rotational_spectrum(*cond[i, :4], cond[i, 4:], grid)
        assert np.allclose(f, again.frequency) and np.allclose(inten, again.intensity)
        assert np.allclose(s.fields[i, 0], again.values.astype(np.float32))
    f2, i2 = R.read_lines(path, 2)
    assert np.array_equal(f2, lines[2][0])
    # per-store log normalisation: exact inverse, weakest 2-decade line ≥ 1 decade above floor
    nz = Normalizer.from_dict(s.normalization)
    assert nz.transform == "log"
    x = np.asarray(s.fields[:], dtype=np.float64)
    peaks = x.reshape(6, -1).max(axis=1)
    assert nz.floor == pytest.approx(peaks.min() * 1e-3)
    y = nz.forward(x)
    assert y.min() >= -1 - 1e-9 and y.max() <= 1 + 1e-9
    above = x >= nz.floor
    assert np.allclose(nz.inverse(y)[above], x[above], rtol=1e-10)


def test_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="A ≥ B ≥ C"):
        R.rotational_spectrum(3000.0, 4000.0, 2000.0, 5.0, (1, 0, 0))
    with pytest.raises(ConfigError, match="2\\^16"):
        R.Grid(0.0, 1000.0, 2**16 + 1)
    with pytest.raises(ConfigError, match="non-polar"):
        R.rotational_spectrum(*ASYM, 5.0, (0, 0, 0))
    with pytest.raises(ConfigError, match="lower the temperature"):
        R.transitions(*ASYM, R.MAX_J + 1)
    with pytest.raises(ConfigError, match="conditions must be"):
        R.generate_rotational_store(tmp_path / "x.zarr", np.zeros((2, 3)))


def test_unet_fourier_position_features():
    import torch

    from rho_core.unet import UNet, UNetConfig, fourier_grid

    ff = fourier_grid((8,), 3, torch.zeros(()))
    c = torch.linspace(-1, 1, 8)
    assert ff.shape == (1, 6, 8)
    assert torch.allclose(ff[0, 2], torch.sin(4 * torch.pi * c), atol=1e-6)
    assert torch.allclose(ff[0, 3], torch.cos(torch.pi * c), atol=1e-6)
    base = dict(dims=1, base_channels=8, channel_mult=(1, 2), attention_levels=(1,), groups=4)
    torch.manual_seed(0)
    plain = UNet(UNetConfig(**base))
    torch.manual_seed(0)
    zero = UNet(UNetConfig(**base, fourier_channels=0))
    assert plain.state_dict().keys() == zero.state_dict().keys()  # default: the same network
    net = UNet(UNetConfig(**base, fourier_channels=5))
    assert net.inp.in_channels == 1 + 10
    x = torch.randn(2, 1, 32)
    assert net(x, torch.tensor([3, 4])).shape == (2, 1, 32)
    # learned positions: a zero-initialised (C, n/p) embedding after the stem; fixed grid size
    lp = UNet(UNetConfig(**base, patch_size=2, learned_positions=32))
    assert lp.pos.shape == (1, 8, 16) and not lp.pos.detach().any()
    lp(x, torch.tensor([3, 4])).sum().backward()
    with pytest.raises(ConfigError, match="learned positions for 32"):
        lp(torch.randn(1, 1, 64), torch.tensor([1]))
    with pytest.raises(ConfigError, match="divisible by patch_size"):
        UNetConfig(**base, patch_size=4, learned_positions=30)
    # configs without the new options serialise as before they existed (old checkpoints resume)
    d = UNetConfig(**base).to_dict()
    assert "fourier_channels" not in d and "learned_positions" not in d
    assert UNetConfig.from_dict(d) == UNetConfig(**base)
    d = UNetConfig(**base, fourier_channels=5).to_dict()
    assert d["fourier_channels"] == 5 and UNetConfig.from_dict(d).fourier_channels == 5


def test_cli_generate_rotational_spectra(tmp_path, capsys):
    from rho_cli.main import main
    from rho_core.data.store import open_store

    out = tmp_path / "rot.zarr"
    args = [
        "generate",
        "rotational-spectra",
        "--out",
        str(out),
        "--points",
        "256",
        "--molecule",
        "0,5000,5000",
        "--molecule",
        "9000,4000,2500",
        "--per-rotor",
        "2",
    ]
    assert main(args) == 0
    s = open_store(out)
    assert s.n == 4 and s.field_shape == (1, 256) and s.normalization["transform"] == "log"
    assert np.allclose(s.params[:2, 4:6], [[s.params[0, 4], 0.0], [s.params[1, 4], 0.0]])
    assert main(args) != 0  # exists
    assert "already exists" in capsys.readouterr().err
    bad = ["generate", "rotational-spectra", "--out", str(tmp_path / "b"), "--points", "70000"]
    assert main(bad) != 0
    assert "2^16" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_spectra_recipe_builds_and_runs(tmp_path):
    """configs/quality/spectra8k.yaml resolves (rho_core.run.resolve_for_store, as the
    benchmark and ``rho train`` do) for an 8,192-point rotational store and runs one forward
    pass; ``--set`` overrides reach the model."""
    import sys
    from pathlib import Path

    import torch

    from rho_core.model import DiffusionModel

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import quality_spectra  # noqa: PLC0415

    torch.set_num_threads(1)
    recipe = Path(__file__).parents[1] / "configs" / "quality" / "spectra8k.yaml"
    cond = R.random_conditions(R.random_rotors(1, seed=5), 2, seed=6)
    store = R.generate_rotational_store(tmp_path / "r.zarr", cond, R.Grid(2000.0, 8000.0, 8192))
    mcfg, cfg = quality_spectra.resolve(store, str(recipe), [])
    assert mcfg.unet.fourier_channels == 12 and mcfg.unet.learned_positions == 8192
    assert mcfg.unet.dims == 1 and mcfg.unet.patch_size == 4 and cfg.train.lr == 2e-3
    m2, _ = quality_spectra.resolve(store, str(recipe), ["model.fourier_channels=3"])
    assert m2.unet.fourier_channels == 3
    model = DiffusionModel(mcfg).eval()
    x = torch.randn(1, 1, 8192)
    with torch.inference_mode():
        out = model(x, torch.tensor([999]), torch.as_tensor(cond[:1]))
    assert out.shape == x.shape and torch.isfinite(out).all()
