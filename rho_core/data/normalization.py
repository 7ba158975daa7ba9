"""Normalisation of physical fields to about [−1, 1] and back, with statistics fitted out of core.

Transforms (``x`` physical, ``y`` normalised; ``m``/``M`` the data min/max):

- ``identity``: y = x.
- ``minmax``:   y = 2 (x − m) / (M − m) − 1, so [m, M] ↦ [−1, 1].
- ``standard``: y = (x − μ) / σ.
- ``asinh``:    u = asinh(x / s), then minmax of u between asinh(m/s) and asinh(M/s). Linear for
  |x| ≪ s, logarithmic (u ≈ sign(x)·log(2|x|/s)) for |x| ≫ s: the answer to fields spanning
  decades. Inverse x = s·sinh(u).
- ``log``:      u = log(max(x, f)) with a floor f > 0, then minmax of u between log(max(m, f)) and
  log(max(M, f)). Inverse x = exp(u); exact for x ≥ f (values below the floor come back as f).

Every transform is a composition of exact bijections (except the log floor), so ``inverse(forward
(x))`` equals ``x`` to the working precision: float64 for numpy arrays, the tensor's own dtype
(float32 unless float64) for torch tensors. Nothing is clipped: samples outside the fitted range
map outside [−1, 1] and back unchanged.

The dict form (``Normalizer.to_dict``; stored in the store attrs ``normalization``)::

    {"transform": "asinh", "scale": s, "min": m, "max": M, "mean": μ, "std": σ,
     "floor": f | None, "stats": {"min", "max", "mean", "std", "abs_p50", "percentiles": {...}}}
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from rho_core.errors import ConfigError, DataError

Transform = Literal["identity", "minmax", "standard", "asinh", "log"]
TRANSFORMS: tuple[str, ...] = ("identity", "minmax", "standard", "asinh", "log")
DEFAULT_PERCENTILES: tuple[float, ...] = (0.1, 1.0, 5.0, 50.0, 95.0, 99.0, 99.9)
LOG_FLOOR_DECADES = 6.0
"""Default ``log`` floor: max(x) · 10^−6 (six decades below the peak)."""


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


@dataclass(frozen=True)
class Normalizer:
    """An invertible map between physical fields and the network's about-[−1, 1] space.

    Attributes:
        transform: one of ``identity|minmax|standard|asinh|log``.
        min, max: physical data range (used by ``minmax``, ``asinh``, ``log``).
        mean, std: physical mean and standard deviation (used by ``standard``).
        scale: ``asinh`` softening scale s > 0 (physical units).
        floor: ``log`` floor f > 0 (physical units).
        stats: extra statistics carried along (percentiles, …), not used by the maps.
    """

    transform: str = "identity"
    min: float = -1.0
    max: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    scale: float = 1.0
    floor: float | None = None
    stats: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ConfigError(
                f"unknown normalisation transform {self.transform!r}; use one of {TRANSFORMS}"
            )
        for name in ("min", "max", "mean", "std", "scale"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(
                    f"normalisation '{name}' must be finite, got {getattr(self, name)}"
                )
        if self.transform in ("minmax", "asinh", "log") and not self.max > self.min:
            raise ConfigError(
                f"normalisation '{self.transform}' needs max > min (got min={self.min}, "
                f"max={self.max}); the data are constant — use 'standard' or 'identity'"
            )
        if self.transform == "standard" and not self.std > 0:
            raise ConfigError(f"normalisation 'standard' needs std > 0, got {self.std}")
        if self.transform == "asinh" and not self.scale > 0:
            raise ConfigError(f"normalisation 'asinh' needs scale > 0, got {self.scale}")
        if self.transform == "log":
            if self.floor is None or not self.floor > 0 or not math.isfinite(self.floor):
                raise ConfigError(f"normalisation 'log' needs a floor > 0, got {self.floor}")
            if not self.max > self.floor:
                raise ConfigError(
                    f"normalisation 'log' needs max > floor (max={self.max}, floor={self.floor})"
                )

    # ----- dict form -------------------------------------------------------------------------
    @classmethod
    def identity(cls) -> Normalizer:
        return cls("identity")

    @classmethod
    def from_dict(cls, d: dict | None) -> Normalizer:
        """Build from the stored dict; ``None``/empty gives the identity."""
        if not d:
            return cls.identity()
        if "transform" not in d:
            raise ConfigError("normalisation dict lacks 'transform'")
        kw: dict[str, Any] = {"transform": str(d["transform"])}
        for name in ("min", "max", "mean", "std", "scale"):
            if d.get(name) is not None:
                kw[name] = float(d[name])
        if d.get("floor") is not None:
            kw["floor"] = float(d["floor"])
        kw["stats"] = dict(d.get("stats") or {})
        return cls(**kw)

    def to_dict(self) -> dict:
        """JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        return asdict(self)

    # ----- the maps ----------------------------------------------------------------------------
    def _bounds(self) -> tuple[float, float]:
        """(lo, hi) of the intermediate variable u that is mapped linearly onto [−1, 1]."""
        if self.transform == "minmax":
            return self.min, self.max
        if self.transform == "asinh":
            return math.asinh(self.min / self.scale), math.asinh(self.max / self.scale)
        if self.transform == "log":
            assert self.floor is not None
            return math.log(max(self.min, self.floor)), math.log(self.max)
        raise AssertionError(self.transform)

    def forward(self, x: Any) -> Any:
        """Physical → normalised; numpy array (computed in float64) or torch tensor."""
        t = self.transform
        if t == "identity":
            return x
        torch_in = _is_torch(x)
        if torch_in:
            import torch

            dt = x.dtype if x.dtype == torch.float64 else torch.float32
            u = x.to(dt)
            ops = (torch.asinh, torch.log, lambda a, f: torch.clamp(a, min=f))
        else:
            u = np.asarray(x, dtype=np.float64)
            ops = (np.arcsinh, np.log, np.maximum)
        asinh, log, floor_ = ops
        if t == "standard":
            y = (u - self.mean) / self.std
        else:
            if t == "asinh":
                u = asinh(u / self.scale)
            elif t == "log":
                u = log(floor_(u, self.floor))
            lo, hi = self._bounds()
            y = (u - lo) * (2.0 / (hi - lo)) - 1.0
        return y if torch_in else _like(y, x)

    def inverse(self, y: Any) -> Any:
        """Normalised → physical (exact inverse of :meth:`forward`, see module docstring)."""
        t = self.transform
        if t == "identity":
            return y
        torch_in = _is_torch(y)
        if torch_in:
            import torch

            dt = y.dtype if y.dtype == torch.float64 else torch.float32
            v = y.to(dt)
            sinh, exp = torch.sinh, torch.exp
        else:
            v = np.asarray(y, dtype=np.float64)
            sinh, exp = np.sinh, np.exp
        if t == "standard":
            return _maybe_like(v * self.std + self.mean, y, torch_in)
        lo, hi = self._bounds()
        u = (v + 1.0) * ((hi - lo) / 2.0) + lo
        if t == "asinh":
            u = sinh(u) * self.scale
        elif t == "log":
            u = exp(u)
        return _maybe_like(u, y, torch_in)

    __call__ = forward


def _like(y: np.ndarray, x: Any) -> np.ndarray:
    """Return y in x's float dtype when x is a float32/float16 array, else float64."""
    dt = getattr(x, "dtype", None)
    if dt is not None and np.dtype(dt).kind == "f" and np.dtype(dt).itemsize < 8:
        return y.astype(dt)
    return y


def _maybe_like(y: Any, x: Any, torch_in: bool) -> Any:
    return y if torch_in else _like(y, x)


# ----- fitting -------------------------------------------------------------------------------


PERCENTILE_SAMPLE = 4_000_000
"""Values drawn (uniformly, without replacement, per chunk) to estimate percentiles."""


def _sample_block(block: np.ndarray, k: int, seed: int) -> np.ndarray:
    flat = np.asarray(block, dtype=np.float64).ravel()
    if flat.size <= k:
        return flat
    return np.random.default_rng(seed).choice(flat, size=k, replace=False)


def compute_statistics(
    darr: Any,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    sample_size: int = PERCENTILE_SAMPLE,
) -> dict:
    """Min, max, mean, std, percentiles and the median of |x| of a dask array, in one pass.

    Min, max, mean and std are exact (float64 accumulation). Percentiles are computed from a
    uniform random sample of at most ``sample_size`` values (the same share drawn from every
    chunk, fixed seeds): exact when the array holds no more values than that, otherwise
    accurate to O(1/√sample_size) in rank — ``dask.array.percentile`` merges per-chunk
    percentiles and was off by tens of per cent on skewed data. Runs on the current Dask
    scheduler (threads by default, a distributed ``Client`` when one is active).
    """
    import dask
    import dask.array as da

    q = [float(p) for p in percentiles]
    if any(not 0 <= p <= 100 for p in q):
        raise ConfigError(f"percentiles must lie in [0, 100], got {q}")
    flat = darr.astype(np.float64)
    blocks = flat.to_delayed().ravel()
    per_block = max(1, int(sample_size) // max(1, len(blocks)))
    pick = dask.delayed(_sample_block, pure=True)
    sample = [pick(b, per_block, seed) for seed, b in enumerate(blocks)]
    lazy = {
        "min": flat.min(),
        "max": flat.max(),
        "mean": flat.mean(),
        "std": flat.std(),
        "absmax": da.fabs(flat).max(),
        "sample": sample,
    }
    (res,) = dask.compute(lazy)
    stats = {k: float(res[k]) for k in ("min", "max", "mean", "std", "absmax")}
    values = np.concatenate(res["sample"])
    stats["abs_p50"], stats["abs_p90"] = (float(v) for v in np.percentile(np.abs(values), [50, 90]))
    pct = np.percentile(values, q) if q else []
    stats["percentiles"] = {f"{p:g}": float(v) for p, v in zip(q, pct, strict=True)}
    stats["percentile_sample"] = int(values.size)
    return stats


def normalizer_from_stats(
    stats: dict,
    transform: str = "minmax",
    *,
    scale: float | None = None,
    floor: float | None = None,
) -> Normalizer:
    """Choose transform parameters from statistics.

    Defaults: ``asinh`` scale s = median |x| (else the 90th percentile of |x|, else
    10^−3·max|x|); ``log`` floor f = max(x)·10^−6.
    """
    if transform not in TRANSFORMS:
        raise ConfigError(f"unknown normalisation transform {transform!r}; use one of {TRANSFORMS}")
    if transform == "asinh" and scale is None:
        scale = stats["abs_p50"] or stats["abs_p90"] or stats["absmax"] * 1e-3 or 1.0
    if transform == "log":
        if stats["max"] <= 0 or stats["min"] < 0:
            raise DataError(
                f"the 'log' transform needs non-negative data with a positive maximum, got "
                f"min {stats['min']:.4g}, max {stats['max']:.4g} (every value below the floor "
                "would map to it); use 'asinh' or 'minmax'"
            )
        if floor is None:
            floor = stats["max"] * 10.0 ** (-LOG_FLOOR_DECADES)
    return Normalizer(
        transform=transform,
        min=stats["min"],
        max=stats["max"],
        mean=stats["mean"],
        std=stats["std"],
        scale=float(scale) if scale is not None else 1.0,
        floor=float(floor) if floor is not None else None,
        stats=dict(stats),
    )


def fit_normalization(
    store_path: str | os.PathLike,
    transform: str = "minmax",
    *,
    scale: float | None = None,
    floor: float | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    write: bool = False,
) -> dict:
    """Fit a normaliser to a store's fields out of core (Dask) and return its dict.

    Args:
        store_path: the store.
        transform: ``minmax|standard|asinh|log|identity``.
        scale: ``asinh`` scale (default: median |x|).
        floor: ``log`` floor (default: max · 10^−6).
        percentiles: percentiles (in %) recorded under ``stats.percentiles``.
        write: also store it in the store attrs ``normalization``.
    """
    from rho_core.data.store import check_writable, open_store

    store = open_store(store_path)
    if store.n == 0:
        raise DataError(f"store '{store_path}' has no samples to fit a normalisation on")
    if write:
        check_writable(store_path)  # before the (possibly long) pass over the data
    stats = compute_statistics(store.to_dask(), percentiles)
    stats["n_samples"] = int(store.n)  # what it was fitted on: appends later make it stale
    d = normalizer_from_stats(stats, transform, scale=scale, floor=floor).to_dict()
    if write:
        write_normalization(store_path, d)
    return d


def stale_normalization(store) -> str | None:
    """A one-line warning when ``store``'s normalisation was fitted on another number of samples
    than the store now holds (samples appended or removed since ``rho normalize``), else None.
    Normalisations fitted before the count was recorded (``stats["n_samples"]``) are not judged."""
    norm = store.normalization or {}
    fitted = (norm.get("stats") or {}).get("n_samples")
    if fitted is None or int(fitted) == int(store.n):
        return None
    return (
        f"store {store.path} holds {store.n} samples but its normalisation was fitted on "
        f"{int(fitted)}: refit it (rho normalize {store.path} --transform "
        f"{norm.get('transform', 'standard')})"
    )


def write_normalization(store_path: str | os.PathLike, d: dict | Normalizer | None) -> None:
    """Write (validated) normalisation into the store attrs ``normalization``; None removes it."""
    from rho_core.data.store import write_store_attrs

    if isinstance(d, Normalizer):
        d = d.to_dict()
    if d is not None:
        d = Normalizer.from_dict(d).to_dict()
    write_store_attrs(store_path, normalization=d)


def spectrum_normalization(
    store_path: str | os.PathLike,
    transform: str = "log",
    *,
    decades: float = 2.0,
    margin: float = 1.0,
) -> dict:
    """A ``log`` or ``asinh`` normaliser for non-negative fields whose samples differ in
    overall scale by decades (line spectra), chosen per store.

    The floor (``log``) or softening scale (``asinh``) is

        f = min_i max(x_i) · 10^−(decades + margin),

    the weakest sample's peak taken ``decades + margin`` decades down: every value within
    ``decades`` of its own sample's peak then lies at least ``margin`` decades above f, where
    ``log`` is exact and ``asinh`` is logarithmic to within 1 % (asinh(x/s) = log(2x/s) + O(s²/x²)).
    The covered dynamic range, log10(max/f), is recorded as ``stats["decades_covered"]``.
    ``minmax`` is also accepted (plain linear map, for comparison). Returns the dict form.
    """
    from rho_core.data.store import open_store

    if transform not in ("log", "asinh", "minmax"):
        raise ConfigError(
            f"spectrum normalisation is 'log', 'asinh' or 'minmax', got {transform!r}"
        )
    if not (decades > 0 and margin >= 0):
        raise ConfigError(f"need decades > 0 and margin ≥ 0, got {decades}, {margin}")
    store = open_store(store_path)
    if store.n == 0:
        raise DataError(f"store '{store_path}' has no samples to fit a normalisation on")
    darr = store.to_dask()
    stats = compute_statistics(darr)
    peaks = np.asarray(darr.reshape(darr.shape[0], -1).max(axis=1).compute(), dtype=np.float64)
    if stats["min"] < 0 or not (peaks > 0).all():
        raise DataError(
            f"'{store_path}' has negative values or an all-zero sample: spectrum normalisation "
            "needs non-negative samples with a positive peak"
        )
    f = float(peaks.min()) * 10.0 ** (-(decades + margin))
    stats["decades_covered"] = float(math.log10(stats["max"] / f))
    stats["sample_peak_min"], stats["sample_peak_max"] = float(peaks.min()), float(peaks.max())
    if transform == "log":
        return normalizer_from_stats(stats, "log", floor=f).to_dict()
    if transform == "asinh":
        return normalizer_from_stats(stats, "asinh", scale=f).to_dict()
    return normalizer_from_stats(stats, "minmax").to_dict()
