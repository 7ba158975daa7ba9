"""The built-in N-body engine: leapfrog kick-drift-kick with Plummer-softened direct summation in
torch (CPU, CUDA or XPU), writing tipsy V2 snapshots named like Bonsai's.

Accelerations and potential energy (G = 1, softening ``eps``):

    a_i = sum_j m_j (x_j - x_i) / (|x_j - x_i|^2 + eps^2)^(3/2)
    W   = -1/2 sum_{i != j} m_i m_j / sqrt(|x_j - x_i|^2 + eps^2),   K = 1/2 sum_i m_i |v_i|^2

computed in row chunks of ``chunk`` particles, so memory is ``O(chunk * N)`` (about
``16 * chunk * N`` bytes in float64), time ``O(N^2)`` per step: fine up to N ~ 2e4 on a CPU and
~1e5 on a GPU. One step of length ``dt`` (second order, symplectic):

    v <- v + a(x) dt / 2;   x <- x + v dt;   v <- v + a(x) dt / 2

Snapshots are written every ``snap_every`` time units (and at t = 0) as
``<out_dir>/<snapname>_<t %010.4f>`` in tipsy V2 with Bonsai's V2 IDs; the energy diagnostic
(``E``, ``K``, ``W``, relative drift) for each snapshot goes to ``<out_dir>/energy.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time as _time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rho_core.data.particles import snapshot_filename
from rho_core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NBodyConfig:
    """Integration settings (Bonsai units: time 9.778 Myr, length kpc).

    Attributes:
        t_end: final time.
        dt: step (Bonsai's typical 1/64).
        snap_every: time between snapshots (a multiple of ``dt``).
        softening: Plummer softening ``eps`` [kpc].
        device: ``auto``, ``cpu``, ``cuda``, ``xpu``.
        precision: ``auto`` (float64 on CPU, float32 on accelerators), ``float32``, ``float64``.
        chunk: rows per force chunk (``None``: chunk x N near 2.6e5 on CPU, 1.6e7 on GPUs).
        snapname: snapshot file prefix.
        threads: CPU threads for torch during the run (``None``: leave torch's setting; 1 is
            fastest on a machine already busy with other work).
    """

    t_end: float = 100.0
    dt: float = 1 / 64
    snap_every: float = 2.0
    softening: float = 0.5
    device: str = "auto"
    precision: str = "auto"
    chunk: int | None = None
    snapname: str = "snap"
    threads: int | None = None

    def __post_init__(self):
        if not self.dt > 0:
            raise ConfigError(f"dt must be > 0, got {self.dt}")
        if not self.t_end >= 0:
            raise ConfigError(f"t_end must be >= 0, got {self.t_end}")
        if not self.snap_every > 0:
            raise ConfigError(f"snap_every must be > 0, got {self.snap_every}")
        ratio = self.snap_every / self.dt
        if abs(ratio - round(ratio)) > 1e-6 * max(1.0, ratio) or round(ratio) < 1:
            raise ConfigError(
                f"snap_every ({self.snap_every}) must be a whole multiple of dt ({self.dt})"
            )
        if not self.softening > 0:
            raise ConfigError(f"softening must be > 0 kpc, got {self.softening}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.precision not in ("auto", "float32", "float64"):
            raise ConfigError(f"precision must be auto, float32 or float64, got {self.precision!r}")

    @property
    def snap_steps(self) -> int:
        return int(round(self.snap_every / self.dt))

    @property
    def n_steps(self) -> int:
        return int(round(self.t_end / self.dt))


def _device_and_dtype(config: NBodyConfig) -> tuple[torch.device, torch.dtype]:
    try:
        from rho_core.devices import resolve_device

        device = resolve_device(config.device)
    except ImportError:  # pragma: no cover - devices.py is optional for this module
        device = torch.device("cpu" if config.device == "auto" else config.device)
    if config.precision == "auto":
        dtype = torch.float64 if device.type == "cpu" else torch.float32
    else:
        dtype = torch.float64 if config.precision == "float64" else torch.float32
    if device.type == "mps":
        dtype = torch.float32
    return device, dtype


def _chunk(config_chunk: int | None, n: int, device: torch.device) -> int:
    """Rows per force chunk: ``chunk x N`` near 2.6e5 elements on a CPU (the block stays in
    cache: 3-4x faster than one big block) and 1.6e7 on an accelerator (fewer kernel launches)."""
    if config_chunk:
        return max(1, config_chunk)
    budget = 1 << 18 if device.type == "cpu" else 1 << 24
    return max(16, budget // max(n, 1))


def _inv_dist(
    xc: torch.Tensor, sqc: torch.Tensor, x: torch.Tensor, sq: torch.Tensor, eps2: float
) -> torch.Tensor:
    """``(c, N)`` matrix ``1 / sqrt(|x_j - x_i|^2 + eps^2)`` via ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j``
    (a matrix product; callers centre the positions so the cancellation stays small)."""
    r2 = sqc[:, None] + sq[None, :] - 2.0 * (xc @ x.T)
    return r2.clamp_(min=0.0).add_(eps2).rsqrt_()


def _zero_self(w: torch.Tensor, a: int) -> torch.Tensor:
    """Zero the self pairs ``(i, a + i)`` of a chunk starting at row ``a``."""
    c = w.shape[0]
    idx = torch.arange(c, device=w.device)
    w[idx, idx + a] = 0.0
    return w


def accelerations(
    pos: torch.Tensor, mass: torch.Tensor, eps: float, chunk: int | None = None
) -> torch.Tensor:
    """Softened accelerations ``(N, 3)`` by chunked direct summation (see module docstring).

    Per chunk: ``w_ij = m_j / (r_ij^2 + eps^2)^(3/2)``, ``a_i = sum_j w_ij x_j - x_i sum_j w_ij``
    (self pairs are zeroed: with a small ``eps`` their huge weight would not cancel in floats).
    """
    n = pos.shape[0]
    c = _chunk(chunk, n, pos.device)
    x = pos - pos.mean(0)
    sq = (x * x).sum(1)
    acc = torch.empty_like(pos)
    eps2 = eps * eps
    for a in range(0, n, c):
        w = _zero_self(_inv_dist(x[a : a + c], sq[a : a + c], x, sq, eps2), a)
        w.pow_(3).mul_(mass[None, :])
        acc[a : a + c] = w @ x - x[a : a + c] * w.sum(1, keepdim=True)
    return acc


def potential_energy(
    pos: torch.Tensor, mass: torch.Tensor, eps: float, chunk: int | None = None
) -> float:
    """Softened potential energy ``W`` (self pairs excluded)."""
    n = pos.shape[0]
    c = _chunk(chunk, n, pos.device)
    x = pos - pos.mean(0)
    sq = (x * x).sum(1)
    total = 0.0
    for a in range(0, n, c):
        inv = _zero_self(_inv_dist(x[a : a + c], sq[a : a + c], x, sq, eps * eps), a)
        total += float(mass[a : a + c] @ inv @ mass)
    return -0.5 * total


def kinetic_energy(vel: torch.Tensor, mass: torch.Tensor) -> float:
    return 0.5 * float((mass[:, None] * vel * vel).sum())


@dataclass
class NBodyResult:
    """Snapshot paths (time order), their times, energies, and timing."""

    snapshots: list[Path]
    times: list[float]
    energies: list[dict]
    seconds: float
    steps: int

    @property
    def max_energy_error(self) -> float:
        return max(abs(e["rel_drift"]) for e in self.energies)


def run_nbody(
    pos: np.ndarray,
    vel: np.ndarray,
    mass: np.ndarray,
    ids: np.ndarray,
    config: NBodyConfig,
    out_dir: str | Path,
    *,
    progress: Callable[[float, float], None] | None = None,
) -> NBodyResult:
    """Integrate from ``t = 0`` to ``config.t_end`` writing snapshots into ``out_dir``.

    Args:
        pos, vel: ``(N, 3)`` [kpc], [100 km/s]; mass ``(N,)``; ids ``(N,)`` (V1 IDs are converted
            to Bonsai's V2 IDs in the output).
        progress: called as ``progress(t, t_end)`` after each snapshot.
    """
    from rho_core.data.tipsy import component_from_ids, v1_ids_to_v2

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(ids)
    if ids.size and (ids.dtype != np.uint64 or int(ids.max()) < 2**31):
        ids_v2 = v1_ids_to_v2(ids)
    else:
        ids_v2 = ids.astype(np.uint64)
    dark = component_from_ids(ids_v2, "v2") == 0
    device, dtype = _device_and_dtype(config)
    # copies: the integration works in place and must not touch the caller's arrays
    x = torch.tensor(np.asarray(pos), dtype=dtype, device=device)
    v = torch.tensor(np.asarray(vel), dtype=dtype, device=device)
    m = torch.tensor(np.asarray(mass), dtype=dtype, device=device)
    if x.shape != v.shape or x.shape[0] != m.shape[0] or x.shape[-1] != 3:
        raise ConfigError(f"pos {tuple(x.shape)}, vel {tuple(v.shape)}, mass {tuple(m.shape)}")
    old_threads = torch.get_num_threads()
    if config.threads and device.type == "cpu":
        torch.set_num_threads(config.threads)
    try:
        return _integrate(x, v, m, ids_v2, dark, config, out_dir, device, progress)
    finally:
        torch.set_num_threads(old_threads)


def _integrate(x, v, m, ids_v2, dark, config, out_dir, device, progress) -> NBodyResult:
    from rho_core.data.tipsy import write_tipsy

    eps, dt = config.softening, config.dt
    dtype = x.dtype
    t0 = _time.perf_counter()
    snaps, times, energies = [], [], []
    e0 = None

    def snapshot(t: float) -> None:
        nonlocal e0
        K = kinetic_energy(v, m)
        W = potential_energy(x, m, eps, config.chunk)
        E = K + W
        if e0 is None:
            e0 = E
        name = snapshot_filename(config.snapname, t)
        path = write_tipsy(
            out_dir / name,
            x.cpu().numpy(),
            v.cpu().numpy(),
            m.cpu().numpy(),
            ids_v2,
            dark=dark,
            time=t,
            variant="v2",
            eps=eps,
        )
        snaps.append(path)
        times.append(t)
        energies.append(
            {"time": t, "E": E, "K": K, "W": W, "rel_drift": (E - e0) / abs(e0) if e0 else 0.0}
        )
        if progress:
            progress(t, config.t_end)

    snapshot(0.0)
    a = accelerations(x, m, eps, config.chunk)
    for step in range(1, config.n_steps + 1):
        v.add_(a, alpha=0.5 * dt)
        x.add_(v, alpha=dt)
        a = accelerations(x, m, eps, config.chunk)
        v.add_(a, alpha=0.5 * dt)
        if step % config.snap_steps == 0:
            snapshot(step * dt)
    seconds = _time.perf_counter() - t0
    result = NBodyResult(snaps, times, energies, seconds, config.n_steps)
    (out_dir / "energy.json").write_text(
        json.dumps(
            {
                "config": asdict(config),
                "device": str(device),
                "dtype": str(dtype),
                "n_particles": int(m.shape[0]),
                "seconds": seconds,
                "energies": energies,
            },
            indent=2,
        )
    )
    if energies and math.isfinite(energies[-1]["rel_drift"]):
        log.info(
            "n-body: %d steps, N=%d, %.1f s, |dE/E| max %.2e",
            config.n_steps,
            m.shape[0],
            seconds,
            result.max_energy_error,
        )
    return result


def run_nbody_file(
    ic_path: str | Path, config: NBodyConfig, out_dir: str | Path, progress=None
) -> NBodyResult:
    """Run from any snapshot/IC file readable by :func:`rho_core.data.snapshots.open_snapshot`."""
    from rho_core.data.snapshots import open_snapshot

    c = open_snapshot(ic_path).read()
    return run_nbody(
        c.pos.astype(np.float64),
        c.vel.astype(np.float64),
        c.mass.astype(np.float64),
        c.ids,
        config,
        out_dir,
        progress=progress,
    )
