"""Distribution scores for stochastic fields (issue 13): does a set of generated realisations have
the distribution of the truth?

Pure numpy on arrays ``(K, 1, N, …, N)`` (store layout) or ``(K, N, …, N)`` in physical units;
the spectrum convention is that of :mod:`rho_core.data.random_fields` (κ = ``fftfreq(N)·N``,
P = |fftn(δ)|²/N^D). Scores, each against the analytic truth or an equal number of fresh true
realisations, never against the training set (except the memorisation check):

- **power-spectrum ratio** per integer shell s = round(|κ|), s = 1 … N/2:
  R_s = P̂_gen(s) / P_true(s), P̂ the mean of |F|²/N^D over the K fields and the shell's modes,
  P_true(s) the mean of the analytic P over the same modes. Its cosmic-variance band for K
  Gaussian realisations is exact: σ_s = √(2 Σ_{κ∈s} P(κ)²) / (√K · Σ_{κ∈s} P(κ)) (a ±κ pair is
  one complex mode, its two |F|² are equal; a self-conjugate mode is one real χ²₁ mode — both
  give the 2P² per grid mode). For log-normal fields the band is the empirical standard error
  of the fresh true realisations. Summary: ``pk_mean_abs_err`` = mean_s |R_s − 1|, and
  ``pk_worst_sigma`` = max_s |R_s − 1|/σ_s; the same for the fresh truth (``pk_floor_*``) is
  what K realisations of the true distribution score.
- **one-point PDF**: W1 between the pooled values of K generated fields and K' fresh true ones,
  beside the true-vs-true W1 of the same sample sizes (the noise floor); skewness and excess
  kurtosis of the pooled values (and the log-normal closed forms when given σ_g²).
- **diversity**: mean pairwise correlation coefficient of the generated fields (each
  mean-subtracted; ≈ 0 for independent draws, 1 for identical ones), beside the truth's.
- **memorisation**: each generated field's nearest-neighbour L2 distance to the training fields,
  against the same for the fresh true fields; a model that copies training fields has generated
  distances far below the smallest true-vs-training distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rho_core.errors import ConfigError

TARGETS = {
    "pk_mean_abs_err_train": 0.03,
    "pk_mean_abs_err_heldout": 0.05,
    "pk_worst_sigma": 5.0,
    "pdf_w1_ratio": 2.0,
    "pairwise_corr_mean": 0.05,
}
"""Issue 13's targets (mean |R − 1| on training / held-out conditions, worst shell in σ, PDF W1 in
units of the true-vs-true floor, mean pairwise correlation)."""


COPY_FRACTION = 0.5
"""A generated field nearer a training field than this fraction of the smallest true-vs-training
nearest-neighbour distance counts as a copy (the memorisation check)."""


def as_fields(x, dims: int | None = None) -> np.ndarray:
    """``(K, N, …, N)`` float64 from ``(K, 1, N, …)`` / ``(K, N, …)`` arrays or tensors."""
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    a = a.astype(np.float64, copy=False)
    if dims is None:
        if a.ndim >= 3 and a.shape[1] == 1:
            a = a[:, 0]
    elif a.ndim == dims + 2:
        if a.shape[1] != 1:
            raise ConfigError(f"fields must have one channel, got shape {a.shape}")
        a = a[:, 0]
    if a.ndim < 2 or a.ndim > 4 or len(set(a.shape[1:])) != 1:
        raise ConfigError(f"fields must be (K, [1,] N, …, N) with equal axes, got {a.shape}")
    return a


def shell_index(size: int, dims: int) -> np.ndarray:
    """Integer shell round(|κ|) of every FFT grid point, flat ``(N^D,)`` int."""
    from rho_core.data.random_fields import kappa_norm

    return np.rint(kappa_norm(size, dims)).astype(np.int64).reshape(-1)


def field_power(fields) -> np.ndarray:
    """|fftn(δ)|²/N^D of every field, flat ``(K, N^D)`` float64."""
    a = as_fields(fields)
    dims, n = a.ndim - 1, a.shape[1]
    f = np.fft.fftn(a, axes=tuple(range(1, dims + 1)))
    return (f.real**2 + f.imag**2).reshape(len(a), -1) / n**dims


def shell_power(fields, k_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-field shell-mean power ``(K, k_max)`` for shells 1 … k_max (default N/2), and the
    shells ``(k_max,)``."""
    a = as_fields(fields)
    dims, n = a.ndim - 1, a.shape[1]
    k_max = n // 2 if k_max is None else int(k_max)
    s = shell_index(n, dims)
    p = field_power(a)
    sel = (s >= 1) & (s <= k_max)
    counts = np.bincount(s[sel], minlength=k_max + 1)[1:]
    out = np.zeros((len(a), k_max))
    for i in range(len(a)):
        out[i] = np.bincount(s[sel], p[i, sel], minlength=k_max + 1)[1:] / counts
    return out, np.arange(1, k_max + 1)


def true_shell_power(
    size: int,
    dims: int,
    amplitude: float,
    spectral_index: float,
    *,
    lognormal: bool = False,
    k_max: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic shell means of P and the relative Gaussian cosmic-variance σ per single field:
    ``(P_true (k_max,), rel_sigma_1 (k_max,))`` with rel_sigma_1 = √(2 ΣP²)/ΣP over the shell
    (divide by √K for K fields). For ``lognormal`` P is the exact log-normal spectrum (its
    rel_sigma_1 is the Gaussian one, a lower bound)."""
    from rho_core.data.random_fields import lognormal_power_spectrum, spectrum_grid

    k_max = size // 2 if k_max is None else int(k_max)
    grid = (lognormal_power_spectrum if lognormal else spectrum_grid)(
        size, dims, amplitude, spectral_index
    )
    p = grid.reshape(-1)
    s = shell_index(size, dims)
    sel = (s >= 1) & (s <= k_max)
    counts = np.bincount(s[sel], minlength=k_max + 1)[1:]
    sum_p = np.bincount(s[sel], p[sel], minlength=k_max + 1)[1:]
    sum_p2 = np.bincount(s[sel], p[sel] ** 2, minlength=k_max + 1)[1:]
    return sum_p / counts, np.sqrt(2.0 * sum_p2) / sum_p


def power_ratio_scores(
    fields,
    amplitude: float,
    spectral_index: float,
    *,
    lognormal: bool = False,
    truth_fields=None,
    k_max: int | None = None,
) -> dict:
    """P̂(s)/P_true(s) per shell of ``fields`` with its cosmic-variance band.

    Returns a dict: ``shells``, ``ratio``, ``sigma`` (band of len(fields) realisations, relative
    units), ``pk_mean_abs_err`` (mean_s |R − 1|), ``pk_worst_sigma`` (max_s |R − 1|/σ),
    ``pk_worst_shell``. For ``lognormal`` the band is the standard error of ``truth_fields``'
    per-field shell power (required then), scaled to len(fields)."""
    a = as_fields(fields)
    dims, n, k = a.ndim - 1, a.shape[1], len(a)
    per_field, shells = shell_power(a, k_max)
    p_true, rel1 = true_shell_power(
        n, dims, amplitude, spectral_index, lognormal=lognormal, k_max=k_max
    )
    ratio = per_field.mean(0) / p_true
    if lognormal:
        if truth_fields is None:
            raise ConfigError("log-normal power bands need fresh true realisations (truth_fields)")
        t, _ = shell_power(truth_fields, k_max)
        rel1 = t.std(0, ddof=1) / p_true
    sigma = rel1 / math.sqrt(k)
    dev = np.abs(ratio - 1)
    z = dev / sigma
    return {
        "shells": shells.tolist(),
        "ratio": ratio.tolist(),
        "sigma": sigma.tolist(),
        "pk_mean_abs_err": float(dev.mean()),
        "pk_worst_sigma": float(z.max()),
        "pk_worst_shell": int(shells[int(z.argmax())]),
    }


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between the empirical distributions of the values of ``a`` and ``b`` (any sizes)."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(np.ravel(a), np.ravel(b)))


def moments(values: np.ndarray) -> tuple[float, float]:
    """(skewness, excess kurtosis) of the pooled values."""
    v = np.ravel(values).astype(np.float64)
    c = v - v.mean()
    m2 = float(np.mean(c**2))
    if m2 == 0:
        return 0.0, -3.0
    return float(np.mean(c**3) / m2**1.5), float(np.mean(c**4) / m2**2 - 3.0)


def lognormal_moments(sigma_g2: float) -> tuple[float, float]:
    """Closed-form (skewness, excess kurtosis) of exp(g) with Var g = σ_g²."""
    w = math.exp(sigma_g2)
    return (w + 2) * math.sqrt(w - 1), w**4 + 2 * w**3 + 3 * w**2 - 6


def pairwise_correlation(fields) -> tuple[float, float]:
    """(mean, mean absolute) off-diagonal correlation coefficient between fields (each
    mean-subtracted and scaled to unit norm); needs ≥ 2 fields."""
    a = as_fields(fields).reshape(len(fields), -1)
    if len(a) < 2:
        raise ConfigError("pairwise correlation needs at least 2 fields")
    a = a - a.mean(1, keepdims=True)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    a = a / np.where(norm > 0, norm, 1.0)
    c = a @ a.T
    off = c[~np.eye(len(a), dtype=bool)]
    return float(off.mean()), float(np.abs(off).mean())


def nearest_distances(query, reference) -> np.ndarray:
    """L2 distance of each query field to its nearest reference field, ``(Q,)`` (physical)."""
    q = as_fields(query).reshape(len(query), -1)
    r = as_fields(reference).reshape(len(reference), -1)
    d2 = (q**2).sum(1)[:, None] + (r**2).sum(1)[None, :] - 2.0 * q @ r.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def random_field_scores(
    generated,
    truth_fresh,
    train_fields,
    amplitude: float,
    spectral_index: float,
    *,
    lognormal: bool = False,
    k_max: int | None = None,
    heldout: bool = False,
) -> dict:
    """All distribution scores of one condition (module docstring), JSON-ready.

    Args:
        generated: ``(K, [1,] N, …)`` generated realisations of (amplitude, spectral_index),
            physical units.
        truth_fresh: ``(K', [1,] N, …)`` true realisations not used in training, K' ≥ 2 (the
            floors: PDF W1 and P(k) use them; ideally K' ≥ 2K so the PDF floor compares
            disjoint sets of K fields).
        train_fields: ``(T, [1,] N, …)`` the training fields to check memorisation against
            (those of this condition, or of its nearest ones for a held-out condition); may
            be ``None`` (check skipped).
        lognormal: the truth is the log-normal field built on the spectrum.
        heldout: apply the held-out P(k) target (5 %) instead of the training one (3 %).

    Returns:
        A dict of floats/lists: ``pk_*`` and ``pk_floor_*`` (the fresh truth's own scores),
        ``shells``/``ratio``/``sigma``; ``pdf_w1``, ``pdf_w1_floor``, ``pdf_w1_ratio``;
        ``skewness``/``kurtosis`` (+ ``_true``, and ``_lognormal`` closed forms);
        ``pairwise_corr_mean`` (+ ``_abs``, ``_true``); ``nn_min``, ``nn_median``,
        ``nn_min_true``, ``nn_median_true``, ``n_closer_than_true_min``, ``n_copies``;
        ``passes`` (target name → bool) and ``all_pass``.
    """
    from rho_core.data.random_fields import field_variance

    g = as_fields(generated)
    t = as_fields(truth_fresh)
    if g.shape[1:] != t.shape[1:]:
        raise ConfigError(f"generated {g.shape[1:]} and true {t.shape[1:]} fields differ in shape")
    if len(g) < 2 or len(t) < 2:
        raise ConfigError("need at least 2 generated and 2 true realisations")
    k = len(g)
    dims, n = g.ndim - 1, g.shape[1]
    out: dict = {"n_generated": k, "n_truth": len(t), "amplitude": float(amplitude)}
    out["spectral_index"] = float(spectral_index)
    pr = power_ratio_scores(
        g, amplitude, spectral_index, lognormal=lognormal, truth_fields=t, k_max=k_max
    )
    out.update(pr)
    # floor: K fresh true fields scored the same way (disjoint from the PDF reference below)
    kf = min(k, len(t) // 2) if len(t) >= 4 else len(t)
    floor = power_ratio_scores(
        t[:kf], amplitude, spectral_index, lognormal=lognormal, truth_fields=t, k_max=k_max
    )
    out["pk_floor_mean_abs_err"] = floor["pk_mean_abs_err"]
    out["pk_floor_worst_sigma"] = floor["pk_worst_sigma"]
    out["pk_floor_n"] = kf
    # one-point PDF: generated vs reference half, true half vs reference half (same sizes)
    half = len(t) // 2
    ref, tq = t[half:], t[:half]
    kk = min(k, half)
    out["pdf_w1"] = wasserstein1(g[:kk], ref)
    # floor: mean over the disjoint true subsets of the same size (≤ 4): one true-vs-true W1 of
    # red-spectrum fields scatters by tens of per cent (a few modes dominate the pooled PDF)
    subsets = [tq[j : j + kk] for j in range(0, len(tq) - kk + 1, kk)][:4]
    out["pdf_w1_floor"] = float(np.mean([wasserstein1(q, ref) for q in subsets]))
    out["pdf_w1_floor_n"] = len(subsets)
    out["pdf_w1_ratio"] = out["pdf_w1"] / max(out["pdf_w1_floor"], 1e-300)
    out["skewness"], out["kurtosis"] = moments(g)
    out["skewness_true"], out["kurtosis_true"] = moments(t)
    if lognormal:
        sg2 = field_variance(n, dims, amplitude, spectral_index)
        out["skewness_lognormal"], out["kurtosis_lognormal"] = lognormal_moments(sg2)
    out["mean_offset"] = float(g.mean())
    out["std_ratio"] = float(g.std() / t.std())
    out["pairwise_corr_mean"], out["pairwise_corr_mean_abs"] = pairwise_correlation(g)
    out["pairwise_corr_mean_true"], out["pairwise_corr_mean_abs_true"] = pairwise_correlation(t[:k])
    passes = {
        "pk_mean_abs_err": out["pk_mean_abs_err"]
        <= TARGETS["pk_mean_abs_err_heldout" if heldout else "pk_mean_abs_err_train"],
        "pk_worst_sigma": out["pk_worst_sigma"] <= TARGETS["pk_worst_sigma"],
        "pdf_w1_ratio": out["pdf_w1_ratio"] <= TARGETS["pdf_w1_ratio"],
        "pairwise_corr_mean": abs(out["pairwise_corr_mean"]) < TARGETS["pairwise_corr_mean"],
    }
    if train_fields is not None:
        tr = as_fields(train_fields)
        d_gen = nearest_distances(g, tr)
        d_true = nearest_distances(t[:k], tr)
        out["nn_min"], out["nn_median"] = float(d_gen.min()), float(np.median(d_gen))
        out["nn_min_true"], out["nn_median_true"] = float(d_true.min()), float(np.median(d_true))
        out["n_closer_than_true_min"] = int((d_gen < d_true.min()).sum())
        out["n_copies"] = int((d_gen < COPY_FRACTION * d_true.min()).sum())
        # the literal target ("no sample closer than the closest true-vs-training pair") is
        # reported as n_closer_than_true_min: for exchangeable draws each generated field falls
        # below the minimum of K true ones with probability 1/(K + 1), and the NN distances of
        # red spectra are dominated by a few modes (wide spread), so it is a noisy count. The
        # pass/fail check flags (near-)copies: a generated field closer than COPY_FRACTION × the
        # closest true-vs-training distance.
        passes["memorisation"] = out["n_copies"] == 0
    out["passes"] = passes
    out["all_pass"] = bool(all(passes.values()))
    return out


def summarize(per_condition: Sequence[dict]) -> dict:
    """Means/maxima over conditions of the headline scores."""
    if not per_condition:
        return {}
    keys = ("pk_mean_abs_err", "pk_floor_mean_abs_err", "pdf_w1_ratio", "pairwise_corr_mean")
    out = {f"mean_{k}": float(np.mean([c[k] for c in per_condition])) for k in keys}
    out["max_pk_worst_sigma"] = float(max(c["pk_worst_sigma"] for c in per_condition))
    out["max_pk_mean_abs_err"] = float(max(c["pk_mean_abs_err"] for c in per_condition))
    out["max_pdf_w1_ratio"] = float(max(c["pdf_w1_ratio"] for c in per_condition))
    out["n_conditions"] = len(per_condition)
    out["n_all_pass"] = int(sum(bool(c["all_pass"]) for c in per_condition))
    return out


# --------------------------------------------------------------------------------------------
# `rho evaluate` / pipeline hook: one draw per condition, scores pooled over conditions
# --------------------------------------------------------------------------------------------

FRESH_SEED = 0x13F1E1D
"""Seed root of the fresh true realisations drawn by :func:`evaluation_scores`."""


def _fresh(size, dims, amp, idx, lognormal, k: int, count: int) -> np.ndarray:
    from rho_core.data.random_fields import gaussian_field

    out = np.empty((count, *(size,) * dims))
    for j in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([FRESH_SEED, int(k), j]))
        out[j] = gaussian_field(size, dims, amp, idx, rng, lognormal=lognormal)
    return out


def pooled_scores(
    generated,
    amplitudes,
    spectral_indices,
    *,
    lognormal: bool = False,
    train_fields: Sequence[np.ndarray | None] | None = None,
    n_fresh: int = 4,
    k_max: int | None = None,
) -> dict:
    """Distribution scores of K generated fields with one (amplitude, spectral_index) each,
    pooled over conditions (what ``rho evaluate`` has: one draw per condition).

    Each field is compared with its own truth: the P(k) ratio is the mean over fields of
    P̂_k(s)/P_true,k(s) with σ_s = √(Σ_k rel_σ_k(s)²)/K (exact for Gaussian fields); the PDF
    pools the fields divided by their analytic one-point std; fresh true realisations
    (``n_fresh`` per field, drawn from the generator with seed :data:`FRESH_SEED`) give the
    floors and, for log-normal fields, the P(k) band. ``train_fields[k]`` (optional): the training
    fields of field k's condition for the memorisation check (distance to the nearest one,
    relative to the fresh fields' median distance; < 0.5 counts as a copy).

    Returns: ``pk_mean_abs_err``, ``pk_worst_sigma``, ``pk_worst_shell``, ``pk_floor_mean_abs_err``,
    ``pk_floor_worst_sigma``, ``pdf_w1``, ``pdf_w1_floor``, ``pdf_w1_ratio``, ``skewness``,
    ``skewness_true``, ``pairwise_corr_mean``, (``nn_ratio_min``, ``n_copies``), ``shells``,
    ``ratio``, ``sigma``, ``n_fields``.
    """
    from rho_core.data.random_fields import field_variance

    g = as_fields(generated)
    k = len(g)
    dims, n = g.ndim - 1, g.shape[1]
    amps = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), (k,))
    idxs = np.broadcast_to(np.asarray(spectral_indices, dtype=np.float64), (k,))
    if k < 2 or n_fresh < 2:
        raise ConfigError("pooled scores need at least 2 generated fields and n_fresh ≥ 2")
    ratios, floors, rel2 = [], [], []
    zg, zt, zt2, fresh_all = [], [], [], []
    for i in range(k):
        fresh = _fresh(n, dims, amps[i], idxs[i], lognormal, i, n_fresh)
        fresh_all.append(fresh)
        p_true, rel1 = true_shell_power(n, dims, amps[i], idxs[i], lognormal=lognormal, k_max=k_max)
        if lognormal:
            per_f, _ = shell_power(fresh, k_max)
            rel1 = per_f.std(0, ddof=1) / p_true
        pg, shells = shell_power(g[i : i + 1], k_max)
        pf, _ = shell_power(fresh[:1], k_max)
        ratios.append(pg[0] / p_true)
        floors.append(pf[0] / p_true)
        rel2.append(rel1**2)
        var = field_variance(n, dims, amps[i], idxs[i])
        sd = math.sqrt(math.expm1(var)) if lognormal else math.sqrt(var)
        zg.append(g[i] / sd)
        zt.append(fresh[0] / sd)
        zt2.append(fresh[1] / sd)
    sigma = np.sqrt(np.sum(rel2, axis=0)) / k

    def summary(r: np.ndarray) -> tuple[float, float, int]:
        dev = np.abs(r - 1)
        z = dev / sigma
        return float(dev.mean()), float(z.max()), int(shells[int(z.argmax())])

    ratio = np.mean(ratios, axis=0)
    out: dict = {"n_fields": k, "shells": shells.tolist(), "ratio": ratio.tolist()}
    out["sigma"] = sigma.tolist()
    out["pk_mean_abs_err"], out["pk_worst_sigma"], out["pk_worst_shell"] = summary(ratio)
    f_err, f_worst, _ = summary(np.mean(floors, axis=0))
    out["pk_floor_mean_abs_err"], out["pk_floor_worst_sigma"] = f_err, f_worst
    out["pdf_w1"] = wasserstein1(np.stack(zg), np.stack(zt2))
    out["pdf_w1_floor"] = wasserstein1(np.stack(zt), np.stack(zt2))
    out["pdf_w1_ratio"] = out["pdf_w1"] / max(out["pdf_w1_floor"], 1e-300)
    out["skewness"], out["kurtosis"] = moments(np.stack(zg))
    out["skewness_true"], out["kurtosis_true"] = moments(np.stack(zt + zt2))
    out["pairwise_corr_mean"], out["pairwise_corr_mean_abs"] = pairwise_correlation(g)
    if train_fields is not None:
        rel = []
        for i in range(k):
            tr = train_fields[i]
            if tr is None or len(tr) == 0:
                continue
            d_g = nearest_distances(g[i : i + 1], tr)[0]
            d_t = float(np.median(nearest_distances(fresh_all[i], tr)))
            rel.append(d_g / max(d_t, 1e-300))
        if rel:
            out["nn_ratio_min"] = float(min(rel))
            out["n_copies"] = int(sum(r < COPY_FRACTION for r in rel))
    return out


def evaluation_scores(draws: dict) -> dict:
    """The ``gaussian_random_field`` scores of ``rho_core.evaluation`` (``_kind_scores`` hook).

    ``draws``: :func:`rho_core.evaluation.draw_for_scoring`'s dict (``generated`` (K, 1, N, …)
    physical, ``params`` (K, P), ``param_names`` with ``amplitude`` and ``spectral_index``,
    ``store``). One draw per condition, so the scores are :func:`pooled_scores` over the
    conditions (the truth: the analytic spectrum and fresh realisations; memorisation against
    the store's fields of each condition, at most 512 each). Keys are prefixed ``grf_``; the
    per-shell ratio and band are ``grf_shells``, ``grf_ratio``, ``grf_sigma``.
    """
    from rho_core.data.store import open_store

    names = list(draws["param_names"])
    if "amplitude" not in names or "spectral_index" not in names:
        raise ConfigError(f"random-field scores need amplitude and spectral_index, got {names}")
    params = np.asarray(draws["params"], dtype=np.float64)
    amps = params[:, names.index("amplitude")]
    idxs = params[:, names.index("spectral_index")]
    lognormal = False
    train: list[np.ndarray | None] | None = None
    store = draws.get("store")
    if store:
        s = open_store(store)
        lognormal = bool(s.provenance.get("lognormal", False))
        sp = np.asarray(s.params)
        train = []
        for row in params:
            rows = np.nonzero(np.all(sp == row, axis=1))[0][:512]
            train.append(s.read_batch(rows)[0] if rows.size else None)
    out = pooled_scores(draws["generated"], amps, idxs, lognormal=lognormal, train_fields=train)
    res = {f"grf_{k}": v for k, v in out.items()}
    res["grf_lognormal"] = lognormal
    res["grf_note"] = (
        "one draw per condition: P(k) ratio, PDF and correlation pooled over conditions against "
        "the analytic truth; benchmarks/quality_grf.py scores many draws per condition"
    )
    return res
