"""Posterior sampling (rho_core.inverse) against closed-form Gaussian posteriors.

With an exact Gaussian prior (rho_core.exact.GaussianDenoiser) the posterior of a linear
observation y = A x + σ_y n is Gaussian and known in closed form (exact.gaussian_posterior), so
the sampler's mean, spread and data fit are checked against it within Monte-Carlo error.
"""

from __future__ import annotations

import math

import pytest
import torch

from rho_core.errors import ConfigError
from rho_core.exact import GaussianDenoiser, gaussian_posterior
from rho_core.inverse import conjugate_gradient, sample_posterior
from rho_core.operators import Linear, Mask
from rho_core.schedules import make_schedule

N, M, SIGMA_Y, B = 32, 8, 0.05, 2000


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_problem(seed: int = 0):
    """The issue's target: 32 independent coordinates with prior std log-spaced over 0.05 … 1
    (ill-conditioned), a random 8 × 32 operator (N(0, 1/32) entries), σ_y = 0.05."""
    g = torch.Generator().manual_seed(seed)
    std = torch.exp(torch.linspace(math.log(0.05), 0.0, N, dtype=torch.float64))
    std = std[torch.randperm(N, generator=g)]
    mean = 0.3 * torch.randn(N, generator=g, dtype=torch.float64)
    a = torch.randn(M, N, generator=g, dtype=torch.float64) / math.sqrt(N)
    x_true = mean + std * torch.randn(N, generator=g, dtype=torch.float64)
    y = a @ x_true + SIGMA_Y * torch.randn(M, generator=g, dtype=torch.float64)
    return mean, std, a, y


@pytest.fixture(scope="module")
def problem():
    schedule = make_schedule("cosine", 1000)
    mean, std, a, y = gaussian_problem()
    post_mean, post_cov = gaussian_posterior(mean, std, a, y, SIGMA_Y)
    return schedule, mean, std, a, y, post_mean, post_cov


def _draw(problem, seed=1, **options):
    schedule, mean, std, a, y, *_ = problem
    den = GaussianDenoiser(schedule, mean.view(1, N), std.view(1, N))
    x = sample_posterior(
        den, (B, 1, N), schedule, y.float(), Linear(a), SIGMA_Y,
        generator=torch.Generator().manual_seed(seed), **options,
    )  # fmt: skip
    return x.double().flatten(1), den


def test_gaussian_posterior_closed_form_matches_dense_bayes() -> None:
    """The reference itself: precision form (S⁻¹ + Aᵀ A/σ²)⁻¹ equals the Kalman form."""
    mean, std, a, y = gaussian_problem(3)
    pm, pc = gaussian_posterior(mean, std, a, y, SIGMA_Y)
    prec = torch.diag(std**-2) + a.T @ a / SIGMA_Y**2
    cov = torch.linalg.inv(prec)
    assert torch.allclose(pc, cov, atol=1e-10)
    assert torch.allclose(pm, cov @ (mean / std**2 + a.T @ y / SIGMA_Y**2), atol=1e-9)


def test_default_mmps_matches_the_exact_gaussian_posterior(problem) -> None:
    """Issue target: with default settings, 2,000 samples have the closed-form posterior mean
    (within Monte-Carlo error), marginal stds within a few per cent, and A·mean fits y as the
    exact posterior mean does."""
    _, _, _, a, y, pm, pc = problem
    x, den = _draw(problem)
    psd = pc.diag().sqrt()
    z = (x.mean(0) - pm) / (psd / math.sqrt(B))
    assert z.abs().max() < 4.5, z  # 32 coordinates, each ~N(0, 1) under the exact posterior
    ratio = x.std(0) / psd
    assert 0.985 < float(ratio.mean()) < 1.015, ratio  # MC error of the mean ratio ≈ 0.3 %
    assert float((ratio - 1).abs().max()) < 0.065, ratio  # each ≈ 1.6 % MC error
    # The data fit: A·mean − A·pm is MC noise with E‖·‖² = tr(A C Aᵀ)/B.
    d = a @ (x.mean(0) - pm)
    assert float(d @ d) < 4 * float(torch.trace(a @ pc @ a.T)) / B
    fit, exact_fit = (torch.linalg.vector_norm(a @ v - y) for v in (x.mean(0), pm))
    assert abs(float(fit / exact_fit) - 1) < 0.1
    # Observed-space covariance (the directions the guidance acts on) as well.
    cov_obs = torch.cov((x @ a.T).T)
    ref_obs = a @ pc @ a.T
    rel = torch.linalg.matrix_norm(cov_obs - ref_obs) / torch.linalg.matrix_norm(ref_obs)
    assert float(rel) < 0.1
    assert den.calls == 50  # default steps, one network pass (plus backward passes) per step


def test_dps_spread_is_not_the_posterior(problem) -> None:
    """DPS (Chung et al.) fits y but its spread is not the posterior's (docs/posterior.md)."""
    _, _, _, _, _, pm, pc = problem
    x, _ = _draw(problem, method="dps", steps=100)
    ratio = x.std(0) / pc.diag().sqrt()
    assert float((ratio - 1).abs().max()) > 0.3
    z = (x.mean(0) - pm) / (pc.diag().sqrt() / math.sqrt(B))
    assert float(z.abs().max()) > 6


def test_too_few_cg_iterations_bias_the_mean(problem) -> None:
    """cg_iters matters: one iteration leaves the mean off by many MC errors (the default
    solves this 8-dim system exactly)."""
    _, _, _, _, _, pm, pc = problem
    x, _ = _draw(problem, cg_iters=1, steps=20)
    z = (x.mean(0) - pm) / (pc.diag().sqrt() / math.sqrt(B))
    assert float(z.abs().max()) > 6


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_other_samplers_run_and_fit(problem, sampler) -> None:
    """DDPM/DDIM on top of MMPS: the mean is the posterior's (their first-order std deficit at
    50 steps is the unconditional samplers' own, docs/samplers.md)."""
    _, _, _, _, _, pm, pc = problem
    x, _ = _draw(problem, sampler=sampler)
    z = (x.mean(0) - pm) / (pc.diag().sqrt() / math.sqrt(B))
    assert float(z.abs().max()) < 5
    ratio = x.std(0) / pc.diag().sqrt()
    assert 0.8 < float(ratio.mean()) < 1.02


def test_mask_on_a_2d_grid_with_per_sample_observations() -> None:
    """Inpainting a 4×4 diagonal Gaussian: a mask decouples the coordinates, so unobserved pixels
    keep the prior and observed ones follow the 1-D posterior; y differs per sample (B, M)."""
    schedule = make_schedule("linear", 200)
    std = torch.linspace(0.2, 1.0, 16, dtype=torch.float64).view(1, 4, 4)
    den = GaussianDenoiser(schedule, 0.0, std)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[::2, 1::2] = True
    op = Mask(mask)
    b, sy = 400, 0.1
    y = torch.stack([torch.full((4,), 0.5), torch.full((4,), -0.5)]).repeat_interleave(b // 2, 0)
    x = sample_posterior(
        den, (b, 1, 4, 4), schedule, y, op, sy, generator=torch.Generator().manual_seed(0)
    ).double()
    s2 = std[0][mask] ** 2
    post_var = s2 * sy**2 / (s2 + sy**2)
    for half, yv in ((x[: b // 2], 0.5), (x[b // 2 :], -0.5)):
        obs = half[:, 0][:, mask]
        assert torch.allclose(obs.mean(0), yv * s2 / (s2 + sy**2), atol=4 * 0.1 / math.sqrt(b / 2))
        assert torch.allclose(obs.std(0), post_var.sqrt(), rtol=0.2)
        free = half[:, 0][:, ~mask]
        assert float(free.mean(0).abs().max()) < 4 * 1.0 / math.sqrt(b / 2)
        assert torch.allclose(free.std(0), std[0][~mask], rtol=0.2)


def test_reproducible_from_the_generator(problem) -> None:
    schedule, mean, std, a, y, *_ = problem
    den = GaussianDenoiser(schedule, mean.view(1, N), std.view(1, N))

    def go(seed):
        return sample_posterior(
            den, (4, 1, N), schedule, y.float(), Linear(a), SIGMA_Y, steps=10,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip

    assert torch.equal(go(5), go(5)) and not torch.equal(go(5), go(6))


def test_conjugate_gradient_solves_batched_spd_systems() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    mats = q @ q.transpose(1, 2) + 0.1 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(3, 6, generator=g, dtype=torch.float64)
    u = conjugate_gradient(lambda v: (mats @ v[..., None])[..., 0], b, iters=12)
    assert torch.allclose(u, torch.linalg.solve(mats, b), atol=1e-8)
    # a zero right-hand side stays zero (no 0/0)
    b[1] = 0
    u = conjugate_gradient(lambda v: (mats @ v[..., None])[..., 0], b, iters=6)
    assert torch.isfinite(u).all() and torch.equal(u[1], torch.zeros(6, dtype=torch.float64))


def test_user_errors_name_the_problem(problem) -> None:
    schedule, mean, std, a, y, *_ = problem
    den = GaussianDenoiser(schedule, mean.view(1, N), std.view(1, N))
    op = Linear(a)

    def call(**kw):
        args = dict(y=y.float(), forward=op, noise_std=SIGMA_Y)
        args.update(kw)
        return sample_posterior(den, (2, 1, N), schedule, steps=3, **args)

    with pytest.raises(ConfigError, match="noise_std"):
        call(noise_std=0.0)
    with pytest.raises(ConfigError, match="y has 7"):
        call(y=y[:7].float())
    with pytest.raises(ConfigError, match="y must be"):
        call(y=torch.zeros(3, M))
    with pytest.raises(ConfigError, match="unknown posterior method"):
        call(method="magic")
    with pytest.raises(ConfigError, match="sampler='ddpm'"):
        call(method="dps", sampler="dpmpp")
    with pytest.raises(ConfigError, match="forward must map"):
        call(forward=lambda x: x)
    with pytest.raises(ConfigError, match="cg_iters"):
        call(cg_iters=-1)


# --------------------------------------------------------------------------------------------
# Physical units and `rho sample --observed` end to end
# --------------------------------------------------------------------------------------------


def test_observation_in_model_space_affine_and_nonlinear() -> None:
    from rho_core.data.normalization import Normalizer
    from rho_core.inverse import observation_in_model_space
    from rho_core.operators import BlockAverage

    field = 5.0 + torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0)).double() * 10
    mask = Mask(torch.arange(64).reshape(8, 8) % 3 == 0)
    mm = Normalizer("minmax", min=5.0, max=15.0)  # z = (x − 5)/5 − 1
    y, s = observation_in_model_space(field, BlockAverage(4), 0.5, mm)
    assert torch.allclose(y, BlockAverage(4)(((field - 5) / 5 - 1)[None])[0])
    assert torch.allclose(s, torch.full((4,), 0.1, dtype=torch.float64))
    # non-linear: a mask commutes with T, the noise is linearised per value ...
    ash = Normalizer("asinh", min=5.0, max=15.0, scale=2.0)
    y, s = observation_in_model_space(field, mask, 0.5, ash)
    x_obs = mask(field[None])[0]
    assert torch.allclose(y, torch.as_tensor(ash.forward(x_obs.numpy())))
    lo, hi = math.asinh(5 / 2), math.asinh(15 / 2)
    slope = 2 / (hi - lo) / torch.sqrt(4 + x_obs**2)  # d/dx of 2(asinh(x/2) − lo)/(hi − lo) − 1
    assert torch.allclose(s, 0.5 * slope)
    # ... any other operator is refused, saying why
    with pytest.raises(ConfigError, match="non-linear.*not a linear function.*mask"):
        observation_in_model_space(field, BlockAverage(2), 0.5, ash)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-D 8×8 blob store in physical units 3·field + 7 (minmax-normalised) and a model
    trained on it for a few steps (the plumbing test needs a real checkpoint, not a good one)."""
    from rho_cli.main import main
    from rho_core.data.normalization import Normalizer, write_normalization
    from rho_core.data.store import create_store
    from rho_core.data.synthetic import GaussianBlobs

    root = tmp_path_factory.mktemp("posterior")
    ds = GaussianBlobs(n=8, spatial_dims=2, size=8, seed=2)
    phys = 3.0 * ds.fields + 7.0
    store = root / "blobs.zarr"
    with create_store(
        store, kind="synthetic_blobs", spatial_dims=2, param_names=list(ds.param_names),
        field_shape=(1, 8, 8), provenance={"test": True},
    ) as w:  # fmt: skip
        w.append(phys, ds.params)
    write_normalization(store, Normalizer("minmax", min=float(phys.min()), max=float(phys.max())))
    cfg = root / "cfg.yaml"
    cfg.write_text(
        "train:\n  batch_size: 4\n  lr: 0.002\n  warmup_steps: 1\n  checkpoint_every: 4\n"
        "  log_every: 100\nmodel:\n  base_channels: 8\n  channel_mult: [1, 2]\n  cond_dim: 8\n"
        "  timesteps: 50\n"
    )
    code = main(
        ["train", "--data", str(store), "--out", str(root / "run"), "--config", str(cfg),
         "--steps", "4", "--device", "cpu", "--quiet"]
    )  # fmt: skip
    assert code == 0
    return root, store, phys, ds.params


def test_cli_posterior_sampling_end_to_end(tiny_model, tmp_path, capsys) -> None:
    """`rho sample --observed … --operator … --noise-std …` equals the library call on y and σ_y
    converted by hand, writes physical units and records the observation in the provenance."""
    import numpy as np

    from rho_cli.main import main
    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.store import open_store
    from rho_core.operators import BlockAverage

    root, store, phys, params = tiny_model
    mask = np.zeros((8, 8), dtype=bool)
    mask[::2] = True
    np.save(tmp_path / "mask.npy", mask)
    p = {"amplitude": float(params[3, 0]), "width": float(params[3, 1])}
    for spec, op in ((f"mask:{tmp_path / 'mask.npy'}", Mask(mask)), ("coarse:4", BlockAverage(4))):
        out = tmp_path / f"post-{spec[:4]}.zarr"
        code = main(
            ["sample", "--checkpoint", str(root / "run"), "--params", json_dumps(p), "--n", "3",
             "--steps", "6", "--seed", "4", "--device", "cpu", "--observed", f"{store}:3",
             "--operator", spec, "--noise-std", "0.3", "--out", str(out), "--quiet"]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        s = open_store(out)
        assert s.n == 3 and s.field_shape == (1, 8, 8)
        post = s.provenance["posterior"]
        assert post["index"] == 3 and post["operator"] == spec and post["noise_std"] == 0.3
        assert post["n_obs"] == op.size((1, 8, 8)) and post["method"] == "mmps"
        assert post["tweedie_min_log_snr"] == -3.0 and post["cg_iters"] == 8
        # the same draw through the library, the conversion done by hand (minmax: z = a x + b)
        loaded = load_for_sampling(root / "run", "cpu")
        lo, hi = float(phys.min()), float(phys.max())
        a = 2.0 / (hi - lo)
        y = op(torch.as_tensor(phys[3:4], dtype=torch.float64) * a - lo * a - 1.0)[0]
        x = sample_posterior(
            loaded.model.denoiser, (3, 1, 8, 8), loaded.model.schedule, y.float(), op, 0.3 * a,
            cond=torch.as_tensor([[p["amplitude"], p["width"]]] * 3, dtype=torch.float64),
            generator=torch.Generator().manual_seed(4), steps=6,
        )  # fmt: skip
        expected = (x.double().numpy() + 1.0) / a + lo
        assert np.allclose(np.asarray(s.fields[:]), expected, rtol=1e-4, atol=1e-3)


def test_cli_isotropic_option_is_recorded(tiny_model, tmp_path) -> None:
    from rho_cli.main import main
    from rho_core.data.store import open_store

    root, store, _, params = tiny_model
    out = tmp_path / "iso.zarr"
    code = main(
        ["sample", "--checkpoint", str(root / "run"), "--params",
         json_dumps({"amplitude": float(params[0, 0]), "width": float(params[0, 1])}),
         "--steps", "4", "--device", "cpu", "--observed", str(store), "--operator", "coarse:2",
         "--noise-std", "0.1", "--tweedie-min-log-snr", "inf", "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert open_store(out).provenance["posterior"]["tweedie_min_log_snr"] == "inf"


def json_dumps(obj) -> str:
    import json

    return json.dumps(obj)


def test_cli_posterior_errors_are_one_line(tiny_model, tmp_path, capsys) -> None:
    from rho_cli.main import main
    from rho_core.checkpoint import checkpoint_dir, latest_valid_checkpoint, load_checkpoint

    root, store, _, _ = tiny_model
    base = ["sample", "--checkpoint", str(root / "run"), "--params",
            '{"amplitude": 0.7, "width": 0.3}', "--device", "cpu", "--quiet"]  # fmt: skip

    def err_of(*extra):
        code = main([*base, "--out", str(tmp_path / "x.zarr"), *extra])
        err = capsys.readouterr().err
        assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x.zarr").exists()
        return err

    assert "missing ['--noise-std']" in err_of("--observed", str(store), "--operator", "coarse:2")
    assert "outside" in err_of(
        "--observed", f"{store}:99", "--operator", "coarse:2", "--noise-std", "0.1"
    )
    assert "multiple" in err_of("--observed", str(store), "--operator", "coarse:3",
                                "--noise-std", "0.1")  # fmt: skip
    # a checkpoint whose normalisation is non-linear refuses a block average, saying why
    state = load_checkpoint(latest_valid_checkpoint(checkpoint_dir(root / "run")))
    state["normalization"] = {"transform": "asinh", "min": 4.0, "max": 10.0, "scale": 1.0}
    ckpt = tmp_path / "asinh.pt"
    torch.save(state, ckpt)
    err = err_of("--checkpoint", str(ckpt), "--observed", str(store), "--operator", "coarse:2",
                 "--noise-std", "0.1")  # fmt: skip
    assert "non-linear" in err and "not a linear function" in err


# --------------------------------------------------------------------------------------------
# A stationary Gaussian field: many observations (M = 128), CG well short of M iterations
# --------------------------------------------------------------------------------------------


def test_fourier_gaussian_denoiser_is_the_dense_posterior_mean() -> None:
    from rho_core.data.random_fields import grf_covariance, spectrum_grid
    from rho_core.exact import FourierGaussianDenoiser

    schedule = make_schedule("cosine", 100)
    cov = torch.as_tensor(grf_covariance(8, 2, 1.0, -2.0))
    den = FourierGaussianDenoiser(schedule, torch.as_tensor(spectrum_grid(8, 2, 1.0, -2.0)), 0.2)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([5, 40, 90])
    ab = schedule.alpha_bar_at(t)
    for i in range(3):
        a, s2 = float(ab[i].sqrt()), float(1 - ab[i])
        gain = a * cov @ torch.linalg.inv(a * a * cov + s2 * torch.eye(64, dtype=torch.float64))
        ref = 0.2 + gain @ (x[i].reshape(-1) - a * 0.2)
        assert torch.allclose(den.x0(x, t)[i].reshape(-1), ref, atol=1e-10)


def test_mmps_inpaints_a_random_field_like_the_wiener_filter() -> None:
    """16² GRF (A = 1, n = −2, unit variance), random 50 % mask, σ_y = 0.05, exact denoiser:
    the sample mean and per-pixel variance of the unobserved pixels match the exact Gaussian
    conditional with the default 8 CG iterations for M = 128 observations."""
    from rho_core.data.random_fields import field_variance, grf_covariance, spectrum_grid
    from rho_core.exact import FourierGaussianDenoiser

    size, k, sy = 16, 128, 0.05
    var = field_variance(size, 2, 1.0, -2.0)
    cov = torch.as_tensor(grf_covariance(size, 2, 1.0, -2.0)) / var
    schedule = make_schedule("cosine", 1000, shift=-4.0)
    den = FourierGaussianDenoiser(
        schedule, torch.as_tensor(spectrum_grid(size, 2, 1.0, -2.0)) / var
    )
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(size, size, generator=g) < 0.5
    root = torch.linalg.cholesky(cov + 1e-10 * torch.eye(size * size, dtype=torch.float64))
    truth = root @ torch.randn(size * size, generator=g, dtype=torch.float64)
    a = torch.eye(size * size, dtype=torch.float64)[mask.reshape(-1)]
    y = a @ truth + sy * torch.randn(a.shape[0], generator=g, dtype=torch.float64)
    cat = cov @ a.T
    gain = torch.linalg.solve(a @ cat + sy**2 * torch.eye(a.shape[0], dtype=torch.float64), cat.T).T
    w_mean, w_var = gain @ y, cov.diag() - (gain * cat).sum(1)
    x = sample_posterior(
        den, (k, 1, size, size), schedule, y.float(), Mask(mask), sy, generator=g
    ).double().reshape(k, -1)  # fmt: skip
    free = ~mask.reshape(-1)
    floor = float(w_var[free].mean().sqrt()) / math.sqrt(k)
    err = float((x.mean(0) - w_mean)[free].pow(2).mean().sqrt())
    assert err < 1.3 * floor  # no bias beyond Monte-Carlo noise (prior std is 1)
    ratio = float((x.var(0)[free] / w_var[free]).mean())
    assert 0.93 < ratio < 1.07


def test_truncated_cg_stops_on_an_indefinite_covariance_part() -> None:
    """K = K₀ + D with K₀ indefinite (a learned Jacobian need not be a covariance): CG with
    ``shift=D`` stops where pᵀK₀p ≤ 0 instead of taking a huge step along a direction where
    pᵀKp is small but positive (measured ×10³ jumps before this guard)."""
    d = torch.full((1, 2), 1e-3, dtype=torch.float64)
    k0 = torch.tensor([[1.0, 0.0], [0.0, -0.999e-3]], dtype=torch.float64)  # K = diag(1, 1e-6)
    b = torch.tensor([[1.0, 1.0]], dtype=torch.float64)

    def matvec(v):
        return v @ k0.T + d * v

    plain = conjugate_gradient(matvec, b, iters=2)
    guarded = conjugate_gradient(matvec, b, iters=2, shift=d)
    assert float(plain.abs().max()) > 1e5  # the unguarded solve follows the tiny curvature
    assert float(guarded.abs().max()) < 10 and torch.isfinite(guarded).all()
    info: dict = {}
    conjugate_gradient(matvec, b, iters=2, shift=d, info=info)
    assert info["curvature_stops"] == 1 and info["matvecs"] >= 1  # the stop is reported


def test_stats_report_which_update_each_step_used(problem) -> None:
    """``stats``: every step is either isotropic (below tweedie_min_log_snr) or Tweedie; with an
    exact Gaussian denoiser the Tweedie covariance is a true covariance, so no guard fires."""
    schedule, mean, std, a, y, *_ = problem
    den = GaussianDenoiser(schedule, mean.view(1, N), std.view(1, N))
    stats: dict = {}
    sample_posterior(
        den, (16, 1, N), schedule, y.float(), Linear(a), SIGMA_Y,
        generator=torch.Generator().manual_seed(0), steps=20, stats=stats,
    )  # fmt: skip
    assert stats["steps"] == 20 and stats["sample_steps"] == 16 * 20
    assert stats["isotropic_steps"] + stats["tweedie_steps"] == 20
    assert 0 < stats["isotropic_steps"] < 20  # the default λ = −3 splits the grid
    assert stats["fallbacks"] == 0 and stats["curvature_stops"] == 0
    assert stats["matvecs"] > 0
