"""Spherical-harmonic voxel volumes: the paper's 3-D experiment, one volume per (l, m).

Grid (design.md): ``c = linspace(-1, 1, size)`` on each axis, arrays indexed ``[x, y, z]``
(``meshgrid(c, c, c, indexing="ij")``). At each voxel r = √(x² + y² + z²), polar angle
θ = arccos(z / r) from +z and azimuth φ = atan2(y, x). The harmonics depend on direction only and
are undefined at r = 0; the centre voxel of an odd-sized grid takes the limit along +z:
θ = 0, φ = atan2(0, 0) = 0, so there Y_l^m = √((2l+1)/4π) δ_{m0}.

Complex harmonics with the Condon–Shortley phase (``scipy.special.sph_harm_y(l, m, θ, φ)``):

    Y_l^m(θ, φ) = P̄_l^m(cos θ) e^{imφ},
    P̄_l^m(x)   = √((2l+1)/(4π) · (l−m)!/(l+m)!) · P_l^m(x)          (P_l^m with (−1)^m)

evaluated here by the stable normalised recurrences (no factorials, fine for l in the hundreds)

    P̄_0^0 = 1/√(4π),   P̄_m^m = −√((2m+1)/(2m)) sin θ · P̄_{m−1}^{m−1},
    P̄_{m+1}^m = √(2m+3) cos θ · P̄_m^m,
    P̄_l^m = a_lm (cos θ · P̄_{l−1}^m − b_lm P̄_{l−2}^m),
    a_lm = √((4l²−1)/(l²−m²)),  b_lm = √(((l−1)²−m²)/(4(l−1)²−1)).

Conventions (``convention``):

- ``"real"`` (default) — the orthonormal real spherical harmonics, 2l + 1 per l:
  m > 0: √2 (−1)^m Re Y_l^m = √2 (−1)^m P̄_l^m cos(mφ);  m = 0: Y_l^0;
  m < 0: √2 (−1)^m Im Y_l^{|m|} = √2 (−1)^m P̄_l^{|m|} sin(|m|φ).
- ``"paper"`` — the paper's Re Y_l^m = P̄_l^m cos(mφ) for 0 ≤ m ≤ l only (Re Y_l^{−m} is
  ±Re Y_l^m, so negative m would only duplicate volumes).

Values are computed in float64 and stored as float32. Generation is chunked: each task computes
the volumes of one (l, |m|) (two volumes for the real convention) slab by slab along z, so memory
per task is two volumes plus one slab's temporaries (256³, l_max = 16: ≈ 0.3 GB per worker).
Tasks run serially or on Dask (a local process cluster, or a given scheduler address); the
results are appended to the store in (l, m) order by a single writer, so the store is identical
bit for bit whichever way it was computed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rho_core.errors import ConfigError

log = logging.getLogger(__name__)

CONVENTIONS = ("real", "paper")
KIND = "spherical_harmonics"
GENERATOR_VERSION = "1"
SLAB_VOXELS = 1 << 21
"""Voxels per z-slab (≈ 2 M: about 16 MiB per float64 temporary)."""

GRID_DOC = (
    "c = linspace(-1, 1, size) per axis, [x, y, z] indexing (meshgrid ij); "
    "theta = arccos(z/r), phi = atan2(y, x); centre voxel (r = 0): theta = 0, phi = 0"
)


@dataclass(frozen=True)
class SphericalHarmonicsConfig:
    """What to generate: grid ``size`` per axis, degrees 0 … ``l_max``, the ``convention``."""

    size: int = 32
    l_max: int = 6
    convention: str = "real"

    def __post_init__(self) -> None:
        if int(self.size) < 2:
            raise ConfigError(f"size must be at least 2 voxels per axis, got {self.size}")
        if int(self.l_max) < 0:
            raise ConfigError(f"l_max must be ≥ 0, got {self.l_max}")
        check_convention(self.convention)


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ConfigError(f"unknown convention {convention!r}; use one of {CONVENTIONS}")


def check_lm(l: int, m: int, convention: str = "real") -> None:
    """Raise :class:`ConfigError` unless (l, m) is valid for the convention."""
    check_convention(convention)
    if int(l) != l or int(m) != m:
        raise ConfigError(f"l and m must be integers, got l={l}, m={m}")
    if l < 0:
        raise ConfigError(f"degree l must be ≥ 0, got l={l}")
    if abs(m) > l:
        raise ConfigError(f"order m must satisfy |m| ≤ l, got l={l}, m={m}")
    if convention == "paper" and m < 0:
        raise ConfigError(
            f"the 'paper' convention (Re Y_l^m) takes 0 ≤ m ≤ l, got m={m}; "
            "use the 'real' convention for negative m"
        )


def lm_pairs(l_max: int, convention: str = "real") -> list[tuple[int, int]]:
    """All (l, m) of a store, in store order: l ascending, then m ascending.

    ``real``: −l ≤ m ≤ l ((l_max + 1)² volumes); ``paper``: 0 ≤ m ≤ l.
    """
    check_convention(convention)
    if l_max < 0:
        raise ConfigError(f"l_max must be ≥ 0, got {l_max}")
    lo = (lambda l: -l) if convention == "real" else (lambda l: 0)
    return [(l, m) for l in range(l_max + 1) for m in range(lo(l), l + 1)]


def grid_axis(size: int) -> np.ndarray:
    """The coordinates of one axis, ``linspace(-1, 1, size)`` (float64)."""
    if size < 2:
        raise ConfigError(f"size must be at least 2 voxels per axis, got {size}")
    return np.linspace(-1.0, 1.0, int(size))


def angles(
    x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(r, cos θ, sin θ, φ) at points (x, y, z) (broadcast), with the r = 0 rule of the module."""
    rho = np.hypot(x, y)
    r = np.hypot(rho, z)
    zero = r == 0
    safe_r = np.where(zero, 1.0, r)
    cos_t = np.where(zero, 1.0, z / safe_r)
    sin_t = np.where(zero, 0.0, rho / safe_r)
    phi = np.arctan2(y, x)
    return r, cos_t, sin_t, phi


def legendre_normalized(l: int, m: int, cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
    """P̄_l^m(cos θ) for 0 ≤ m ≤ l (Condon–Shortley phase, orthonormal factor), float64."""
    assert 0 <= m <= l
    p = np.full(np.broadcast(cos_t, sin_t).shape, 1.0 / math.sqrt(4.0 * math.pi))
    for k in range(1, m + 1):
        p *= -math.sqrt((2 * k + 1) / (2 * k)) * sin_t
    if l == m:
        return p
    p_prev, p = p, math.sqrt(2 * m + 3) * cos_t * p
    for k in range(m + 2, l + 1):
        a = math.sqrt((4 * k * k - 1) / (k * k - m * m))
        b = math.sqrt(((k - 1) ** 2 - m * m) / (4 * (k - 1) ** 2 - 1))
        p_prev, p = p, a * (cos_t * p - b * p_prev)
    return p


def harmonic_at(
    l: int, m: int, x: np.ndarray, y: np.ndarray, z: np.ndarray, convention: str = "real"
) -> np.ndarray:
    """The harmonic (l, m) of the convention at points (x, y, z) (direction only), float64."""
    check_lm(l, m, convention)
    _, cos_t, sin_t, phi = angles(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
    return _angular(l, m, cos_t, sin_t, phi, convention)


def _angular(l, m, cos_t, sin_t, phi, convention) -> np.ndarray:
    mabs = abs(m)
    p = legendre_normalized(l, mabs, cos_t, sin_t)
    if m == 0:
        return p
    if convention == "paper":
        return p * np.cos(mabs * phi)
    sign = math.sqrt(2.0) * (-1.0) ** mabs
    return sign * p * (np.cos(mabs * phi) if m > 0 else np.sin(mabs * phi))


def _slabs(size: int) -> Iterable[slice]:
    step = max(1, SLAB_VOXELS // (size * size))
    for z0 in range(0, size, step):
        yield slice(z0, min(size, z0 + step))


def harmonic_volumes(
    l: int, ms: Sequence[int], size: int, convention: str = "real"
) -> list[np.ndarray]:
    """Volumes ``(size, size, size)`` float32 of (l, m) for each m in ``ms`` sharing |m|.

    Computed z-slab by z-slab (the associated Legendre part once for all ``ms``).
    """
    for m in ms:
        check_lm(l, m, convention)
    mabs = {abs(m) for m in ms}
    assert len(mabs) <= 1, "harmonic_volumes takes orders sharing |m|"
    c = grid_axis(size)
    out = [np.empty((size, size, size), dtype=np.float32) for _ in ms]
    xs, ys = c[:, None, None], c[None, :, None]
    for sl in _slabs(size):
        zs = c[None, None, sl]
        _, cos_t, sin_t, phi = angles(xs, ys, zs)
        if not ms:
            break
        ma = abs(ms[0])
        p = legendre_normalized(l, ma, cos_t, sin_t)
        for vol, m in zip(out, ms, strict=True):
            if m == 0:
                val = p
            elif convention == "paper":
                val = p * np.cos(ma * phi)
            else:
                trig = np.cos(ma * phi) if m > 0 else np.sin(ma * phi)
                val = (math.sqrt(2.0) * (-1.0) ** ma) * p * trig
            vol[:, :, sl] = val
    return out


def harmonic_volume(l: int, m: int, size: int, convention: str = "real") -> np.ndarray:
    """One volume ``(size, size, size)`` float32 of the harmonic (l, m)."""
    return harmonic_volumes(l, [m], size, convention)[0]


def _task(l: int, ms: tuple[int, ...], size: int, convention: str) -> list[np.ndarray]:
    """Unit of parallel work: the volumes of (l, m) for m in ``ms`` (sharing |m|)."""
    return harmonic_volumes(l, list(ms), size, convention)


def _group_tasks(pairs: Sequence[tuple[int, int]]) -> list[tuple[int, tuple[int, ...]]]:
    """Group requested (l, m) by (l, |m|), keeping first-appearance order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for l, m in pairs:
        groups.setdefault((l, abs(m)), []).append(m)
    return [(l, tuple(ms)) for (l, _), ms in groups.items()]


ProgressFn = Callable[[int, int], None]


def generate_spherical_harmonics(
    out: str | os.PathLike,
    size: int = 32,
    l_max: int = 6,
    convention: str = "real",
    workers: int = 0,
    scheduler_address: str | None = None,
    mode: str = "w-",
    *,
    lm: Sequence[tuple[int, int]] | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Write a store of kind ``"spherical_harmonics"`` with one volume per (l, m).

    Args:
        out: store path.
        size: voxels per axis (≥ 2).
        l_max: highest degree (≥ 0); all (l, m) of :func:`lm_pairs` unless ``lm`` is given.
        convention: ``"real"`` or ``"paper"`` (module docstring).
        workers: 0 or 1 computes serially in this process; N > 1 starts a local Dask cluster of
            N single-threaded worker processes.
        scheduler_address: address of a running Dask scheduler (overrides ``workers``).
        mode: store mode, ``"w-"`` (refuse existing), ``"w"`` (overwrite) or ``"a"`` (append).
        lm: explicit list of (l, m) to generate instead of all pairs up to ``l_max``.
        progress: called as ``progress(done, total)`` after each volume is written.

    Returns:
        The store path. Fields ``(N, 1, size, size, size)`` float32, params ``(N, 2)`` = (l, m).
    """
    from rho_core import __version__

    cfg = SphericalHarmonicsConfig(int(size), int(l_max), convention)
    if lm is None:
        pairs = lm_pairs(cfg.l_max, convention)
    else:
        pairs = [(int(a), int(b)) for a, b in lm]
        for a, b in pairs:
            check_lm(a, b, convention)
        if not pairs:
            raise ConfigError("no (l, m) pairs to generate")
        if len(set(pairs)) != len(pairs):
            raise ConfigError("(l, m) pairs must not repeat")
    if workers < 0:
        raise ConfigError(f"workers must be ≥ 0, got {workers}")
    provenance = {
        "generator": "rho_core.data.spherical_harmonics",
        "generator_version": GENERATOR_VERSION,
        "rho_version": __version__,
        "size": cfg.size,
        "l_max": max(lp for lp, _ in pairs),
        "convention": convention,
        "grid": GRID_DOC,
        "normalisation": "orthonormal on the unit sphere (physical values, not rescaled)",
    }
    from rho_core.data.store import preflight, rows_to_append

    check_memory(cfg.size)  # one task holds the ±m volumes
    preflight(out, mode)  # fail fast, before starting a cluster
    # appending: same convention only; (l, m) already in the store are not written twice
    pairs = rows_to_append(out, mode, provenance, ("generator", "convention"), pairs)
    if not pairs:
        return Path(out)
    tasks = _group_tasks(pairs)
    use_dask = scheduler_address is not None or workers > 1
    with contextlib.ExitStack() as stack:
        # connect first: an unreachable scheduler must not leave an empty store behind
        client = stack.enter_context(dask_client(workers, scheduler_address)) if use_dask else None
        return _generate(
            out, cfg, convention, pairs, tasks, provenance, mode, client, workers, progress
        )


def _generate(out, cfg, convention, pairs, tasks, provenance, mode, client, workers, progress):
    from rho_core.data.store import create_store

    order = {p: i for i, p in enumerate(pairs)}
    writer = create_store(
        out,
        kind=KIND,
        spatial_dims=3,
        param_names=["l", "m"],
        field_shape=(1, cfg.size, cfg.size, cfg.size),
        provenance=provenance,
        mode=mode,  # type: ignore[arg-type]
    )
    total = len(pairs)
    with writer:
        spc = writer.samples_per_chunk
        pending: dict[int, np.ndarray] = {}
        batch_f: list[np.ndarray] = []
        batch_p: list[tuple[int, int]] = []
        next_i = 0
        done = 0

        def accept(l: int, ms: tuple[int, ...], vols: list[np.ndarray]) -> None:
            nonlocal next_i, done
            for m, v in zip(ms, vols, strict=True):
                pending[order[(l, m)]] = v
            while next_i in pending:
                batch_f.append(pending.pop(next_i))
                batch_p.append(pairs[next_i])
                next_i += 1
                if len(batch_f) >= spc:
                    flush()

        def flush() -> None:
            nonlocal done
            if not batch_f:
                return
            writer.append(np.stack(batch_f)[:, None], np.asarray(batch_p, dtype=np.float64))
            done += len(batch_f)
            batch_f.clear()
            batch_p.clear()
            if progress is not None:
                progress(done, total)

        if client is None:
            for l, ms in tasks:
                accept(l, ms, _task(l, ms, cfg.size, convention))
        else:
            _run_dask(client, tasks, cfg.size, convention, workers, accept)
        flush()
        assert next_i == total and not pending
    return Path(out)


def check_memory(size: int, volumes: int = 2) -> None:
    """Refuse, before any work, a ``size`` whose ``volumes`` float32 volumes (held at once by one
    task) do not fit in 80 % of this machine's memory — instead of a MemoryError halfway."""
    need = volumes * 4 * int(size) ** 3
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return
    if need > 0.8 * total:
        raise ConfigError(
            f"size {size} needs about {need / 2**30:.0f} GiB of memory per task ({volumes} "
            f"float32 volumes of {size}³), more than this machine's {total / 2**30:.0f} GiB; "
            "use a smaller --size"
        )


@contextlib.contextmanager
def dask_client(workers: int, scheduler_address: str | None) -> Iterator[Any]:
    """A Dask ``Client``: to ``scheduler_address`` when given, else to a new local cluster of
    ``workers`` single-threaded processes (closed on exit)."""
    from dask.distributed import Client, LocalCluster

    cluster = None
    try:
        if scheduler_address is not None:
            from distributed.comm.addressing import parse_address, parse_host_port

            scheme, location = parse_address(scheduler_address)
            if scheme in ("tcp", "tls"):
                parse_host_port(location)  # a malformed address: ValueError, before any IO
            client = Client(scheduler_address, timeout="10s")
        else:
            cluster = LocalCluster(
                n_workers=int(workers),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.WARNING,
            )
            client = Client(cluster)
    except (OSError, ValueError) as exc:  # unreachable, or a malformed address
        if cluster is not None:
            cluster.close()
        raise ConfigError(
            f"cannot reach the Dask scheduler {scheduler_address!r}: {exc} (give --scheduler "
            "tcp://HOST:PORT of a running scheduler, or --workers N for a local cluster)"
        ) from exc
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_dask(client, tasks, size, convention, workers, accept) -> None:
    """Run tasks on Dask with at most 2 × workers in flight (bounded memory), feeding ``accept``."""
    from dask.distributed import as_completed

    n_workers = max(1, len(client.scheduler_info().get("workers", {})) or int(workers))
    window = 2 * n_workers
    it = iter(tasks)
    meta = {}
    ac = as_completed()
    for l, ms in it:
        fut = client.submit(_task, l, ms, size, convention, pure=False)
        meta[fut.key] = (l, ms)
        ac.add(fut)
        if ac.count() >= window:
            break
    for fut in ac:
        l, ms = meta.pop(fut.key)
        accept(l, ms, fut.result())
        fut.release()
        nxt = next(it, None)
        if nxt is not None:
            nf = client.submit(_task, nxt[0], nxt[1], size, convention, pure=False)
            meta[nf.key] = nxt
            ac.add(nf)


generate_store = generate_spherical_harmonics
"""Alias used by ``tasks/data.py``."""
