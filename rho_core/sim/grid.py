"""A grid of merger simulations: parameter lists -> one run directory per combination, run in
parallel through Dask (a local cluster, or a scheduler address), with either engine.

Layout of ``OUT``::

    OUT/manifest.json                 every run: directory, parameters, snapshots, times
    OUT/run_000/ic.tipsy(.json)       initial conditions (V1 tipsy) + sidecar (params, ID ranges)
    OUT/run_000/snap_<t %010.4f>      snapshots (tipsy V2 from the built-in engine; Bonsai's own)
    OUT/run_000/run.json              written last: the run is complete (reruns skip it)
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from rho_core.errors import ConfigError
from rho_core.sim.bonsai_engine import BonsaiConfig, run_bonsai
from rho_core.sim.initial_conditions import MergerConfig, write_initial_conditions
from rho_core.sim.nbody import NBodyConfig, run_nbody_file

log = logging.getLogger(__name__)

ENGINES = ("builtin", "bonsai")
GRID_AXES = (
    "mass_ratio",
    "pericenter",
    "separation",
    "inclination1",
    "argument1",
    "inclination2",
    "argument2",
)


@dataclass(frozen=True)
class EngineSpec:
    """Which engine runs the grid. ``nbody`` holds t_end/dt/snap_every/softening for both."""

    kind: str = "builtin"
    nbody: NBodyConfig = field(default_factory=NBodyConfig)
    bonsai: BonsaiConfig | None = None

    def __post_init__(self):
        if self.kind not in ENGINES:
            raise ConfigError(f"unknown engine {self.kind!r}; choose from {ENGINES}")
        if self.kind == "bonsai" and self.bonsai is None:
            raise ConfigError("engine 'bonsai' needs a Bonsai binary (--bonsai-binary PATH)")


@dataclass(frozen=True)
class GridSpec:
    """Values per axis; the grid is their Cartesian product applied to ``base``."""

    mass_ratio: tuple[float, ...] = (1.0,)
    pericenter: tuple[float, ...] = (5.0,)
    separation: tuple[float, ...] = (50.0,)
    inclination1: tuple[float, ...] = (0.0,)
    argument1: tuple[float, ...] = (0.0,)
    inclination2: tuple[float, ...] = (30.0,)
    argument2: tuple[float, ...] = (0.0,)
    base: MergerConfig = field(default_factory=MergerConfig)

    def configs(self) -> list[MergerConfig]:
        axes = [getattr(self, a) for a in GRID_AXES]
        for name, vals in zip(GRID_AXES, axes, strict=True):
            if not vals:
                raise ConfigError(f"grid axis {name} has no values")
        out = []
        for k, combo in enumerate(itertools.product(*axes)):
            kw = dict(zip(GRID_AXES, combo, strict=True))
            out.append(replace(self.base, seed=self.base.seed + k, **kw))
        return out


def run_merger(
    config: MergerConfig,
    run_dir: str | Path,
    engine: EngineSpec,
    progress: Callable[[float, float], None] | None = None,
) -> dict:
    """ICs -> simulation -> ``run.json``; returns the run record.

    Skips a completed run made with the same settings (initial-condition config, engine and
    ``t_end``/``dt``/``snap_every``/``softening``/``snapname``) and refuses, with a
    :class:`ConfigError`, one made with others: its snapshots would be filed under the new
    parameters. ``progress(t, t_end)`` is called after each snapshot of the built-in engine
    (default: a log line at every tenth of ``t_end``).
    """
    run_dir = Path(run_dir)
    done = run_dir / "run.json"
    if done.exists():
        record = json.loads(done.read_text())
        _check_same_run(run_dir, record, config, engine)
        return record
    t0 = time.perf_counter()
    ic, side = write_initial_conditions(config, run_dir / "ic.tipsy")
    nb = engine.nbody
    if engine.kind == "builtin" and progress is None:
        progress = _log_progress(run_dir.name, nb.t_end)
    record: dict = {
        "params": config.physical_params(),
        "ic": ic.name,
        "sidecar": side.name,
        "engine": engine.kind,
    }
    if engine.kind == "builtin":
        res = run_nbody_file(ic, nb, run_dir, progress=progress)
        snaps = [[p.name] for p in res.snapshots]
        record.update(times=res.times, max_energy_error=res.max_energy_error)
    else:
        groups = run_bonsai(
            engine.bonsai,
            ic,
            run_dir,
            t_end=nb.t_end,
            dt=nb.dt,
            snap_every=nb.snap_every,
            snapname=nb.snapname,
        )
        from rho_core.data.particles import parse_snapshot_name

        snaps = [[p.name for p in g] for g in groups]
        record.update(times=[parse_snapshot_name(g[0]).time for g in groups])
    record.update(
        snapshots=snaps,
        seconds=time.perf_counter() - t0,
        nbody=asdict(nb),
        n_particles=config.n_particles,
    )
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(done)
    return record


# NBodyConfig fields that change the snapshots (device, precision and threads do not).
_PHYSICS_KEYS = ("t_end", "dt", "snap_every", "softening", "snapname")


def _check_same_run(run_dir: Path, record: dict, config: MergerConfig, engine: EngineSpec):
    """Refuse to reuse a completed run whose settings differ from the requested ones."""
    side = run_dir / str(record.get("sidecar", "ic.tipsy.json"))
    try:
        old_cfg = json.loads(side.read_text()).get("config", {})
    except (OSError, json.JSONDecodeError):
        old_cfg = {}
    new_cfg = json.loads(json.dumps(asdict(config)))
    diff = [k for k in new_cfg if old_cfg.get(k) != new_cfg[k]]
    if record.get("engine") != engine.kind:
        diff.append("engine")
    old_nb, new_nb = record.get("nbody", {}), asdict(engine.nbody)
    diff += [k for k in _PHYSICS_KEYS if k in old_nb and old_nb[k] != new_nb[k]]
    if diff:
        detail = ", ".join(
            f"{k} {old_cfg.get(k, old_nb.get(k, record.get(k)))!r} -> "
            f"{new_cfg.get(k, new_nb.get(k, engine.kind))!r}"
            for k in diff[:4]
        )
        more = f" (+{len(diff) - 4} more)" if len(diff) > 4 else ""
        raise ConfigError(
            f"{run_dir} is a completed run with other settings ({detail}{more}); "
            "use another --out, or remove it to rerun"
        )


def _log_progress(name: str, t_end: float) -> Callable[[float, float], None]:
    """``progress(t, t_end)`` that logs at every tenth of the run (and at its end)."""
    last = [-1]

    def progress(t: float, total: float) -> None:
        tenth = int(10 * t / t_end) if t_end > 0 else 10
        if tenth != last[0] and t > 0:
            last[0] = tenth
            log.info("%s: t = %g / %g", name, t, t_end)

    return progress


def _run_one(config: MergerConfig, run_dir: str, engine: EngineSpec) -> dict:
    rec = run_merger(config, run_dir, engine)
    return {**rec, "dir": Path(run_dir).name}


def run_grid(
    grid: GridSpec | Sequence[MergerConfig],
    out_dir: str | Path,
    engine: EngineSpec = EngineSpec(),
    *,
    workers: int = 1,
    address: str | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> list[dict]:
    """Run every grid point; returns the run records (also in ``OUT/manifest.json``).

    ``workers > 1`` starts a local Dask cluster (processes, one thread each); ``address``
    connects to an existing scheduler instead; ``workers == 1`` runs in this process.
    """
    configs = grid.configs() if isinstance(grid, GridSpec) else list(grid)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create output directory {out_dir} ({exc.strerror}); choose another --out"
        ) from exc
    lock = _lock_out_dir(out_dir)
    try:
        return _run_all(configs, out_dir, engine, workers, address, progress)
    finally:
        os.close(lock)  # releases the flock


def _lock_out_dir(out_dir: Path) -> int:
    """An exclusive advisory lock on ``OUT`` (released when the process ends): two grids writing
    the same run directories at once would interleave their snapshots."""
    fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"{out_dir} is in use by another simulation grid; wait for it to finish or use "
            "another --out"
        ) from None
    return fd


def _run_all(configs, out_dir: Path, engine, workers, address, progress) -> list[dict]:
    dirs = [str(out_dir / f"run_{k:03d}") for k in range(len(configs))]
    records: list[dict | None] = [None] * len(configs)
    if workers <= 1 and address is None:
        for k, (cfg, d) in enumerate(zip(configs, dirs, strict=True)):
            records[k] = _run_one(cfg, d, engine)
            if progress:
                progress(k + 1, len(configs), records[k])
    else:
        from dask.distributed import as_completed

        from rho_core.data.spherical_harmonics import dask_client

        # a local cluster, or the scheduler at `address` (ConfigError when unreachable)
        with dask_client(workers, address) as client:
            futs = {
                client.submit(_run_one, c, d, engine, pure=False): k
                for k, (c, d) in enumerate(zip(configs, dirs, strict=True))
            }
            for n_done, fut in enumerate(as_completed(futs), start=1):
                records[futs[fut]] = fut.result()
                if progress:
                    progress(n_done, len(configs), records[futs[fut]])
    manifest = {"runs": records, "engine": engine.kind}
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(out_dir / "manifest.json")
    return records  # type: ignore[return-value]
