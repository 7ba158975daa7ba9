"""Gaussian and log-normal random fields with a known power spectrum: a dataset whose true
distribution is known exactly, for scoring density estimation (issue 13).

Convention (periodic box, ``N`` points per axis, ``D`` spatial dims, arrays indexed ``[x, y, z]``):

- κ is the integer wave-vector, ``numpy.fft.fftfreq(N) * N`` per axis (κ_i ∈ {−N/2, …, N/2 − 1});
  ``|κ|`` its Euclidean norm.
- F = ``numpy.fft.fftn(δ)`` (unnormalised forward transform). The Gaussian field δ is real, has
  F[0] = 0 exactly (zero mean in every realisation) and

      E|F[κ]|² / N^D = P(κ) = A · |κ|^n      for every κ ≠ 0,

  with amplitude A > 0 and spectral index n (``power_spectrum``). The one-point variance is
  σ² = Σ_κ P(κ) / N^D (``field_variance``). Modes at different ±κ pairs are independent.
- Construction: white noise w (i.i.d. N(0, 1) per grid point), δ = ifftn(√P · fftn(w)), real
  part. Since E|fftn(w)[κ]|² = N^D and √P is even in κ this is exact, including the
  self-conjugate modes (2κ ≡ 0 mod N, e.g. κ = N/2), whose Fourier coefficients are real.
- Log-normal (``lognormal=True``): δ = exp(g − σ_g²/2) − 1 with g Gaussian of spectrum P and
  σ_g² = Σ P / N^D, so E δ = 0 and Var δ = exp(σ_g²) − 1. Its exact spectrum is
  ``lognormal_power_spectrum``: ξ_g = ifftn(P), ξ_δ = exp(ξ_g) − 1, P_δ = fftn(ξ_δ) (real). A
  log-normal realisation does not have F[0] = 0 (its mean is zero only in expectation).

Store (kind ``gaussian_random_field``): params ``(amplitude, spectral_index)`` float64; fields
``(len(A)·len(n)·K, 1, N, …, N)`` float32 in physical units, rows ordered amplitude (outer),
spectral index, realisation (inner). Realisation ``r`` (the row index) uses the white noise of
``numpy.random.default_rng(SeedSequence([seed, r]))``, so a store depends only on its arguments,
not on the number of workers.

Exact Gaussian log-density (``grf_log_prob``), for the likelihood and posterior-sampling work:
the covariance C = Σ_{κ≠0} P(κ) u_κ u_κ^H (u_κ = e^{2πi κ·x/N}/√(N^D), the orthonormal Fourier
basis) has eigenvalue P(κ) on every κ ≠ 0 and 0 on the constant vector, so δ lives on the
(N^D − 1)-dimensional zero-mean subspace. The density computed is the Gaussian density on that
subspace with respect to its Euclidean (Lebesgue) measure — what
``scipy.stats.multivariate_normal(cov=C, allow_singular=True).logpdf`` returns:

    log p(δ) = −½ Σ_{κ≠0} [ |F[κ]|² / (N^D P(κ)) + log(2π P(κ)) ]      (nats)

The sum runs over *all* κ ≠ 0 of the full FFT grid: a ±κ pair stands for two real modes
(cos and sin) of variance P(κ) each, and |F[κ]|² + |F[−κ]|² = 2|F[κ]|² is their summed square;
a self-conjugate κ (κ = −κ mod N) is one real mode. The mean (κ = 0) component of the input is
ignored, i.e. the input is projected on the zero-mean subspace.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rho_core.errors import ConfigError

log = logging.getLogger(__name__)

KIND = "gaussian_random_field"
APPENDS_KEY = "grf_appends"  # group attr: the provenance of every --append, with its first row
PARAM_NAMES = ("amplitude", "spectral_index")
GENERATOR_VERSION = "1"
MAX_POINTS = 1 << 27
"""Most grid points of one realisation (N^D): 512³, 2^27 float64 ≈ 1 GiB per temporary."""
TASK_BYTES = 64 << 20
"""Target float32 bytes of one task's block of realisations (~64 MiB)."""

CONVENTION_DOC = (
    "periodic box; kappa = fftfreq(N)*N per axis; F = numpy.fft.fftn(delta) unnormalised; "
    "E|F[kappa]|^2/N^D = A*|kappa|^n for kappa != 0, F[0] = 0; lognormal: "
    "delta = exp(g - sigma_g^2/2) - 1 with g Gaussian of that spectrum"
)

ProgressFn = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------
# Pure math: wave-vectors, spectra, realisations, the exact log-density
# --------------------------------------------------------------------------------------------


def kappa_norm(size: int, dims: int) -> np.ndarray:
    """|κ| on the FFT grid, shape ``(size,) * dims`` float64 (κ = ``fftfreq(size) * size``)."""
    k = np.fft.fftfreq(int(size)) * int(size)
    grids = np.meshgrid(*([k] * int(dims)), indexing="ij")
    return np.sqrt(sum(g * g for g in grids))


def power_spectrum(kappa_norm: np.ndarray | float, amplitude: float, spectral_index: float):
    """P = A · |κ|^n where |κ| > 0 and 0 at |κ| = 0 (float64, the shape of ``kappa_norm``).

    Units: E|F[κ]|²/N^D of the field (physical units²)."""
    k = np.asarray(kappa_norm, dtype=np.float64)
    safe = np.where(k > 0, k, 1.0)
    out = np.where(k > 0, float(amplitude) * safe ** float(spectral_index), 0.0)
    return out if out.ndim else float(out)


def spectrum_grid(size: int, dims: int, amplitude: float, spectral_index: float) -> np.ndarray:
    """P(κ) on the full FFT grid, shape ``(size,) * dims`` float64, 0 at κ = 0."""
    return power_spectrum(kappa_norm(size, dims), amplitude, spectral_index)


def field_variance(size: int, dims: int, amplitude: float, spectral_index: float) -> float:
    """One-point variance of the Gaussian field: Σ_κ P(κ) / N^D (physical units²)."""
    p = spectrum_grid(size, dims, amplitude, spectral_index)
    return float(p.sum() / p.size)


def lognormal_power_spectrum(
    size: int, dims: int, amplitude: float, spectral_index: float
) -> np.ndarray:
    """Exact E|F[κ]|²/N^D of the log-normal field built on P, shape ``(size,) * dims`` float64.

    ξ_g = ifftn(P) (the correlation function of g), ξ_δ = exp(ξ_g) − 1, P_δ = fftn(ξ_δ).real.
    """
    p = spectrum_grid(size, dims, amplitude, spectral_index)
    xi_g = np.fft.ifftn(p).real
    return np.fft.fftn(np.expm1(xi_g)).real


def gaussian_field(
    size: int,
    dims: int,
    amplitude: float,
    spectral_index: float,
    rng: np.random.Generator,
    *,
    lognormal: bool = False,
) -> np.ndarray:
    """One realisation, shape ``(size,) * dims`` float64 (module docstring for the convention)."""
    shape = (int(size),) * int(dims)
    white = rng.standard_normal(shape)
    amp = np.sqrt(spectrum_grid(size, dims, amplitude, spectral_index))
    g = np.fft.ifftn(np.fft.fftn(white) * amp).real
    if lognormal:
        var = field_variance(size, dims, amplitude, spectral_index)
        return np.expm1(g - 0.5 * var)
    return g


def realization_rng(seed: int, row: int) -> np.random.Generator:
    """The generator of store row ``row``: ``default_rng(SeedSequence([seed, row]))``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(row)]))


def _as_batch(x, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 1:
        a = np.full(n, a[0])
    if a.size != n:
        raise ConfigError(
            f"{name} must be a scalar or have one value per field ({n}), got {a.size}"
        )
    return a


def grf_log_prob(
    fields,
    amplitude,
    spectral_index,
    *,
    dims: int | None = None,
) -> np.ndarray:
    """Exact log-density of Gaussian random fields, ``(B,)`` float64 in nats.

    Args:
        fields: ``(B, 1, N, …, N)`` (store layout) or, with ``dims`` given, ``(B, N, …, N)``;
            numpy array or torch tensor, physical units.
        amplitude, spectral_index: scalars or ``(B,)`` arrays (A > 0).
        dims: spatial dims; default ``fields.ndim − 2`` (a channel axis of size 1).

    Returns:
        log p(δ) on the (N^D − 1)-dim zero-mean subspace (module docstring):
        −½ Σ_{κ≠0} [|F[κ]|²/(N^D P(κ)) + log(2π P(κ))]. The mean of each input is ignored.
    """
    x = fields.detach().cpu().numpy() if hasattr(fields, "detach") else np.asarray(fields)
    x = x.astype(np.float64, copy=False)
    if dims is None:
        dims = x.ndim - 2
        if dims not in (1, 2, 3) or x.shape[1] != 1:
            raise ConfigError(
                f"fields must be (B, 1, N, …) with 1 to 3 spatial axes, got shape {x.shape}"
            )
        x = x[:, 0]
    dims = int(dims)
    if x.ndim != dims + 1 or len(set(x.shape[1:])) != 1:
        raise ConfigError(f"fields must be (B, N, …) with {dims} equal spatial axes, got {x.shape}")
    b, n = x.shape[0], x.shape[1]
    amp = _as_batch(amplitude, b, "amplitude")
    idx = _as_batch(spectral_index, b, "spectral_index")
    if np.any(amp <= 0) or not np.all(np.isfinite(amp)) or not np.all(np.isfinite(idx)):
        raise ConfigError("amplitude must be > 0 and finite, spectral_index finite")
    m = n**dims
    k = kappa_norm(n, dims).reshape(-1)
    nz = k > 0
    logk = np.log(k[nz])
    power = np.abs(np.fft.fftn(x, axes=tuple(range(1, dims + 1))).reshape(b, -1)[:, nz]) ** 2
    out = np.empty(b)
    for i in range(b):
        log_p = math.log(amp[i]) + idx[i] * logk  # log P(κ), κ ≠ 0
        quad = np.sum(power[i] * np.exp(-log_p)) / m
        out[i] = -0.5 * (quad + np.sum(log_p) + (m - 1) * math.log(2 * math.pi))
    return out


def grf_covariance(size: int, dims: int, amplitude: float, spectral_index: float) -> np.ndarray:
    """Dense covariance ``(N^D, N^D)`` float64 of the flattened field (C-order): C_xy = ξ(x − y)
    with ξ = ifftn(P). For small grids only (tests, brute-force checks)."""
    m = int(size) ** int(dims)
    if m > 4096:
        raise ConfigError(f"grf_covariance is for small grids (N^D ≤ 4096), got {m}")
    xi = np.fft.ifftn(spectrum_grid(size, dims, amplitude, spectral_index)).real
    pts = np.stack(np.meshgrid(*([np.arange(size)] * dims), indexing="ij"), -1).reshape(-1, dims)
    diff = (pts[:, None, :] - pts[None, :, :]) % size
    return xi[tuple(diff[..., a] for a in range(dims))]


# --------------------------------------------------------------------------------------------
# Store generation
# --------------------------------------------------------------------------------------------


def _check_args(size, dims, amplitudes, spectral_indices, realizations, workers) -> None:
    if int(dims) not in (1, 2, 3) or int(dims) != dims:
        raise ConfigError(f"--dims must be 1, 2 or 3, got {dims}")
    if int(size) != size or size < 4:
        raise ConfigError(f"--size must be an integer ≥ 4 points per axis, got {size}")
    if int(size) ** int(dims) > MAX_POINTS:
        raise ConfigError(
            f"--size {size} in {dims}-D is {int(size) ** int(dims):,} points per field, more than "
            f"the limit {MAX_POINTS:,} (512³); use a smaller --size"
        )
    if not amplitudes:
        raise ConfigError("give at least one --amplitude")
    if not spectral_indices:
        raise ConfigError("give at least one --spectral-index")
    for a in amplitudes:
        if not (math.isfinite(a) and a > 0):
            raise ConfigError(f"--amplitude values must be finite and > 0, got {a}")
    for s in spectral_indices:
        if not math.isfinite(s):
            raise ConfigError(f"--spectral-index values must be finite, got {s}")
    if len(set(amplitudes)) != len(amplitudes) or len(set(spectral_indices)) != len(
        spectral_indices
    ):
        raise ConfigError("--amplitude and --spectral-index values must not repeat")
    if int(realizations) != realizations or realizations < 1:
        raise ConfigError(f"--realizations must be an integer ≥ 1, got {realizations}")
    if int(workers) != workers or workers < 0:
        raise ConfigError(f"--workers must be ≥ 0, got {workers}")


def _check_resources(out: Path, size: int, dims: int, n_fields: int) -> None:
    """Refuse, before allocating, grids whose working memory or store would not fit."""
    pts = int(size) ** int(dims)
    need = 6 * 8 * pts  # white noise, its complex FFT, the spectrum, the result (float64)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = None
    if total is not None and need > 0.5 * total:
        raise ConfigError(
            f"--size {size} in {dims}-D needs about {need / 2**30:.1f} GiB per realisation, more "
            f"than half of this machine's {total / 2**30:.0f} GiB; use a smaller --size"
        )
    raw = 4 * pts * n_fields
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if raw > free:
        raise ConfigError(
            f"the store would hold {raw / 2**30:.1f} GiB of float32 fields ({n_fields} × {pts:,} "
            f"points), more than the {free / 2**30:.1f} GiB free at {parent}; use fewer "
            "--realizations or a smaller --size"
        )


def _check_append(out: Path, provenance: dict) -> list[dict]:
    """Refuse an append that would not add independent realisations of the same kind of field;
    return the store's earlier append records (``attrs["grf_appends"]``)."""
    from rho_core.data.store import open_store
    from rho_core.errors import StoreError

    store = open_store(out)
    if store.kind != KIND:
        raise StoreError(
            f"cannot append random fields to store '{out}' of kind '{store.kind}'; use another "
            "--out"
        )
    base = store.provenance
    for key in ("size", "dims", "lognormal"):
        if key in base and base[key] != provenance[key]:
            raise StoreError(
                f"cannot append to store '{out}': it holds fields with {key} = {base[key]!r}, "
                f"not {provenance[key]!r}; use the same option or another store"
            )
    appends = _seeds_free(out, provenance)
    if store.normalization is not None:
        log.warning(
            "store '%s' has a normalization fitted on its %d samples before this append; refit "
            "it afterwards (rho normalize %s --transform %s)",
            out, store.n, out, store.normalization.get("transform", "standard"),
        )  # fmt: skip
    return appends


def _seeds_free(out: Path, provenance: dict) -> list[dict]:
    """The store's append records, after refusing a seed that already made some of its rows."""
    from rho_core.data.store import open_store, read_store_attrs
    from rho_core.errors import StoreError

    appends = list(read_store_attrs(out).get(APPENDS_KEY) or [])
    used = [open_store(out).provenance.get("seed")] + [a.get("seed") for a in appends]
    if provenance["seed"] in used:
        raise StoreError(
            f"cannot append to store '{out}' with --seed {provenance['seed']}: that seed already "
            f"made its fields (seeds used: {', '.join(str(u) for u in used)}), so the new "
            "realisations would repeat them; pass another --seed"
        )
    return appends


def _block(size: int, dims: int, realizations: int) -> int:
    return int(max(1, min(realizations, TASK_BYTES // (4 * int(size) ** int(dims)))))


def realizations_task(
    size: int,
    dims: int,
    amplitude: float,
    spectral_index: float,
    seed: int,
    rows: Sequence[int],
    lognormal: bool = False,
) -> np.ndarray:
    """Unit of (Dask) work: the realisations of store rows ``rows`` of one condition,
    ``(len(rows), 1, N, …, N)`` float32."""
    out = np.empty((len(rows), 1, *(int(size),) * int(dims)), dtype=np.float32)
    for j, r in enumerate(rows):
        out[j, 0] = gaussian_field(
            size, dims, amplitude, spectral_index, realization_rng(seed, r), lognormal=lognormal
        )
    return out


def generate_random_field_store(
    path: str | os.PathLike,
    size: int,
    dims: int,
    amplitudes: Sequence[float],
    spectral_indices: Sequence[float],
    realizations: int,
    seed: int = 0,
    lognormal: bool = False,
    workers: int = 0,
    *,
    scheduler_address: str | None = None,
    mode: str = "w-",
    progress: ProgressFn | None = None,
) -> Path:
    """Write a ``gaussian_random_field`` store (module docstring for the convention and order).

    Args:
        path: store directory; an existing store is refused (``mode="w-"``) unless ``mode="w"``
            (replace it) or ``mode="a"``: append this grid's realisations to a store of the same
            size, dims and ``lognormal`` made with *another* seed (the same seed would repeat
            the white noise of rows 0, 1, …; refused). Each append's provenance and first row
            are recorded in the group attr ``grf_appends``; refit the normalization afterwards.
        size: points per axis N (≥ 4); dims: D ∈ {1, 2, 3}.
        amplitudes, spectral_indices: the grid of conditions (A > 0).
        realizations: K independent realisations per condition.
        seed: row r uses ``default_rng(SeedSequence([seed, r]))`` (independent of ``workers``).
        lognormal: write δ = exp(g − σ_g²/2) − 1 instead of the Gaussian g.
        workers: 0/1 serial; N > 1 a local Dask cluster of N single-threaded processes.
        scheduler_address: a running Dask scheduler (overrides ``workers``).
        progress: ``progress(done, total)`` after each block of fields is written.

    Returns:
        The store path. Fields ``(len(A)·len(n)·K, 1, N, …)`` float32, params float64.
    """
    from rho_core import __version__
    from rho_core.data.spherical_harmonics import dask_client
    from rho_core.data.store import create_store, preflight, store_exists

    amplitudes = [float(a) for a in amplitudes]
    spectral_indices = [float(s) for s in spectral_indices]
    _check_args(size, dims, amplitudes, spectral_indices, realizations, workers)
    if mode not in ("w-", "w", "a"):
        raise ConfigError(
            f"mode must be 'w-' (refuse an existing store), 'w' (replace it) or 'a' (append new "
            f"realisations to it), got {mode!r}"
        )
    size, dims, realizations, seed = int(size), int(dims), int(realizations), int(seed)
    conds = [(a, s) for a in amplitudes for s in spectral_indices]
    total = len(conds) * realizations
    out = Path(path)
    if mode == "w-" and (out.is_dir() and any(out.iterdir()) or out.is_file()):
        from rho_core.errors import StoreError

        what = "store" if store_exists(out) else "path"
        raise StoreError(
            f"{what} '{out}' already exists; choose another --out, pass --overwrite "
            "(mode='w') to replace a store or --append (mode='a', another --seed) to add to it"
        )
    preflight(out, mode)
    _check_resources(out, size, dims, total)
    provenance = {
        "generator": "rho_core.data.random_fields",
        "generator_version": GENERATOR_VERSION,
        "rho_version": __version__,
        "size": size,
        "dims": dims,
        "amplitudes": amplitudes,
        "spectral_indices": spectral_indices,
        "realizations": realizations,
        "seed": seed,
        "lognormal": bool(lognormal),
        "convention": CONVENTION_DOC,
        "seeding": "row r: numpy default_rng(SeedSequence([seed, r]))",
    }
    appends = _check_append(out, provenance) if mode == "a" and store_exists(out) else None
    block = _block(size, dims, realizations)
    tasks = []  # (condition index, rows)
    for ci in range(len(conds)):
        for r0 in range(0, realizations, block):
            lo = ci * realizations + r0
            tasks.append((ci, list(range(lo, min(lo + block, (ci + 1) * realizations)))))
    use_dask = scheduler_address is not None or workers > 1
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(dask_client(workers, scheduler_address)) if use_dask else None
        writer = create_store(
            out,
            kind=KIND,
            spatial_dims=dims,
            param_names=list(PARAM_NAMES),
            field_shape=(1, *(size,) * dims),
            provenance=provenance,
            mode=mode,  # type: ignore[arg-type]
        )
        with writer:
            done = 0
            if appends is not None:  # logged before any row, so a killed append is on record
                appends = _seeds_free(out, provenance)  # again, now that we hold the lock
                record = {**provenance, "first_row": int(writer.n), "rows": total}
                writer.set_attrs(**{APPENDS_KEY: [*appends, record]})

            def write(ci: int, rows: list[int], fields: np.ndarray) -> None:
                nonlocal done
                params = np.tile(np.asarray(conds[ci], dtype=np.float64), (len(rows), 1))
                writer.append(fields, params)
                done += len(rows)
                if progress is not None:
                    progress(done, total)

            args = (size, dims)
            if client is None:
                for ci, rows in tasks:
                    a, s = conds[ci]
                    write(ci, rows, realizations_task(*args, a, s, seed, rows, lognormal))
            else:
                _run_dask(client, tasks, conds, args, seed, lognormal, workers, write)
    return out


def _run_dask(client, tasks, conds, args, seed, lognormal, workers, write) -> None:
    """Submit tasks with at most 2 × workers in flight; write results in task order."""
    n_workers = max(1, len(client.scheduler_info().get("workers", {})) or int(workers))
    window = 2 * n_workers
    futures: list = []
    it = iter(tasks)

    def submit(task) -> None:
        ci, rows = task
        a, s = conds[ci]
        fut = client.submit(realizations_task, *args, a, s, seed, rows, lognormal, pure=False)
        futures.append((task, fut))

    for task in it:
        submit(task)
        if len(futures) >= window:
            break
    while futures:
        (ci, rows), fut = futures.pop(0)
        write(ci, rows, fut.result())
        fut.release()
        nxt = next(it, None)
        if nxt is not None:
            submit(nxt)


generate_store = generate_random_field_store
"""Alias in the style of the other generators."""
