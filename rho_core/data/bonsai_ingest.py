"""Bonsai snapshots -> projected surface-density images -> a ``galaxy_merger`` store.

For each snapshot (a tipsy file, a per-rank set, or a BonsaiIO file) the ingester

1. reads and validates it and hashes its bytes (SHA-256 over all its files: the sample key);
2. renders it (:mod:`rho_core.data.render`) with one field of view for the whole ingest;
3. takes its parameters from, in increasing priority: the IC sidecar beside it
   (``ic.tipsy.json``, written by ``rho simulate``), a manifest (``--params`` CSV/JSON), the
   command line (``--param k=v``); the snapshot's time becomes the column ``time``.

Steps 1-2 run in parallel over snapshots through Dask (a local cluster or a scheduler address)
or in this process; ONE writer (this process) appends the results in input order, in windows,
so memory stays ``O(window * image)``. Idempotent: a snapshot whose content hash is already in
the store is skipped. A bad file (truncated, inconsistent, not Bonsai, missing parameters) is
reported with its name and reason, nothing of it is written, and the others still go in; when no
file is good the store is not created or touched.

Field of view: ``RenderConfig.fov`` if given; else the store's, when appending; else
:func:`rho_core.data.render.auto_fov` of the earliest snapshot of each run (runs = directory +
snapshot name), the largest over runs, so every frame of every run shares one scale.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from rho_core.data.particles import _rank_files, group_snapshot_paths, parse_snapshot_name
from rho_core.data.render import RenderConfig, auto_fov, render_provenance, render_snapshot
from rho_core.data.snapshots import open_snapshot
from rho_core.errors import ConfigError, DataError, RhoError

log = logging.getLogger(__name__)

KIND = "galaxy_merger"
SIDECAR_NAMES = ("ic.tipsy.json",)
_HASH_BLOCK = 8 << 20


@dataclass(frozen=True)
class IngestConfig:
    """Ingest settings: rendering, parameter sources and parallelism."""

    render: RenderConfig = field(default_factory=RenderConfig)
    params_file: str | None = None
    params: dict = field(default_factory=dict)
    quick_ratio: float | None = None
    workers: int = 1
    address: str | None = None
    window: int = 32

    def __post_init__(self):
        if self.quick_ratio is not None and not 0 < self.quick_ratio <= 1:
            raise ConfigError(
                f"quick_ratio must be in (0, 1] (the share of particles in a quick dump), "
                f"got {self.quick_ratio}"
            )
        if "time" in self.params:
            raise ConfigError(
                "the 'time' parameter comes from each snapshot (header or file name); "
                "drop --param time=..."
            )


@dataclass
class IngestReport:
    """What happened: samples added, duplicates skipped, failures ``[(name, reason)]``."""

    store: Path
    added: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    fov: float | None = None
    n_total: int = 0


# --------------------------------------------------------------------------- inputs
def find_snapshots(paths: Sequence[str | Path]) -> list[tuple[Path, ...]]:
    """Expand directories (recursively: files named like Bonsai snapshots) and group rank files.

    A path that does not exist is kept (it is reported as a failure later, unless it is the
    prefix of a per-rank set).
    """
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(
                q
                for q in p.rglob("*")
                if q.is_file()
                and parse_snapshot_name(q) is not None
                and not q.name.endswith((".json", ".tmp", ".log"))
            )
            if not found:
                raise DataError(
                    f"{p}: directory holds no files named like Bonsai snapshots "
                    f"(<snap>_<time>...); pass other snapshot files themselves, e.g. {p}/*.tipsy"
                )
            files.extend(found)
        elif not p.exists() and _rank_files(p):
            files.extend(_rank_files(p))  # the prefix of a per-rank set
        else:
            files.append(p)
    return group_snapshot_paths(files)


def content_hash(paths: Sequence[Path]) -> str:
    """``sha256:<hex>`` over the bytes of all files of one snapshot, in order."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                h.update(block)
    return "sha256:" + h.hexdigest()


def _numeric(name: str, value, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"parameter {name!r} = {value!r} from {where} is not a number") from exc
    if not math.isfinite(v):
        raise ConfigError(f"parameter {name!r} from {where} is not finite")
    return v


def parse_param_args(items: Sequence[str]) -> dict[str, float]:
    """``["k=v", ...]`` -> ``{k: float(v)}``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--param expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"--param expects NAME=VALUE, got {item!r}")
        out[k] = _numeric(k, v, "--param")
    return out


@dataclass
class Manifest:
    """Parameters from a ``--params`` file: defaults for all plus per-snapshot entries.

    Accepted forms: CSV with a ``snapshot`` (or ``path``/``file``) column and one column per
    parameter; JSON ``{"defaults": {...}, "snapshots": {PATTERN: {...}}}``, a list of
    ``{"snapshot": PATTERN, ...}`` records, a flat ``{name: value}`` applied to every snapshot, or
    a ``rho simulate`` ``manifest.json`` (``{"runs": [{"dir", "params"}]}``). A PATTERN matches a
    snapshot by path, file name, glob, or a directory containing it.
    """

    source: str
    defaults: dict
    entries: list[tuple[str, dict]]

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--params file {path} does not exist")
        base = path.parent
        entries: list[tuple[str, dict]] = []
        defaults: dict = {}
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            if not rows:
                raise ConfigError(f"{path}: CSV has no rows")
            col = next((c for c in ("snapshot", "path", "file") if c in rows[0]), None)
            for r in rows:
                vals = {k: v for k, v in r.items() if k != col and k is not None and v != ""}
                if col is None:
                    defaults.update(vals)
                else:
                    entries.append((str(r[col]), vals))
        else:
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
            if isinstance(data, dict) and "runs" in data and isinstance(data["runs"], list):
                for r in data["runs"]:
                    if r and "dir" in r:
                        entries.append((str(base / r["dir"]), dict(r.get("params", {}))))
            elif isinstance(data, dict) and ("snapshots" in data or "defaults" in data):
                defaults = dict(data.get("defaults", {}))
                snaps = data.get("snapshots", {})
                items = (
                    snaps.items()
                    if isinstance(snaps, dict)
                    else [(r.get("snapshot") or r.get("path"), r) for r in snaps]
                )
                entries = [
                    (str(k), {a: b for a, b in v.items() if a not in ("snapshot", "path")})
                    for k, v in items
                ]
            elif isinstance(data, list):
                for r in data:
                    key = r.get("snapshot") or r.get("path") or r.get("file")
                    if key is None:
                        raise ConfigError(f"{path}: every record needs a 'snapshot' key")
                    entries.append(
                        (
                            str(key),
                            {a: b for a, b in r.items() if a not in ("snapshot", "path", "file")},
                        )
                    )
            elif isinstance(data, dict):
                defaults = data
            else:
                raise ConfigError(f"{path}: expected a JSON object or list")
        # resolve relative paths against the manifest's folder
        resolved = []
        for key, vals in entries:
            resolved.append((key, vals))
            cand = base / key
            if not Path(key).is_absolute() and cand.exists():
                resolved[-1] = (str(cand), vals)
        return cls(str(path), defaults, resolved)

    def lookup(self, snapshot: Path) -> dict:
        out = dict(self.defaults)
        snap_abs = snapshot.resolve()
        for key, vals in self.entries:
            kp = Path(key)
            hit = (
                key == snapshot.name
                or fnmatch.fnmatch(str(snapshot), key)
                or fnmatch.fnmatch(snapshot.name, key)
                or (kp.exists() and (kp.resolve() == snap_abs or kp.resolve() in snap_abs.parents))
            )
            if hit:
                out.update(vals)
        return {k: _numeric(k, v, self.source) for k, v in out.items()}


def find_sidecar(snapshot: Path) -> Path | None:
    """The IC sidecar beside a snapshot (``ic.tipsy.json`` or another ``*.json`` with
    ``params`` and ``id_ranges``)."""
    folder = snapshot.parent
    for name in SIDECAR_NAMES:
        if (folder / name).is_file():
            return folder / name
    for cand in sorted(folder.glob("*.json")):
        try:
            d = json.loads(cand.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(d, dict) and "params" in d and "id_ranges" in d:
            return cand
    return None


def snapshot_params(snapshot: Path, manifest: Manifest | None, cli: dict) -> dict[str, float]:
    """Parameters of one snapshot (without ``time``): sidecar < manifest < command line."""
    params: dict[str, float] = {}
    side = find_sidecar(snapshot)
    if side is not None:
        d = json.loads(side.read_text())
        params.update({k: _numeric(k, v, str(side)) for k, v in d["params"].items()})
    if manifest is not None:
        params.update(manifest.lookup(snapshot))
    params.update(cli)
    params.pop("time", None)  # the time always comes from the snapshot
    return params


def _run_key(group: tuple[Path, ...]) -> str:
    parsed = parse_snapshot_name(group[0])
    return str(group[0].parent / (parsed.snapname if parsed else group[0].name))


# --------------------------------------------------------------------------- worker
def _process(
    group: tuple[Path, ...],
    render: RenderConfig,
    fov: float,
    quick_ratio: float | None,
    known: frozenset,
) -> dict:
    """Hash + validate + render one snapshot; never raises for bad files (returns the reason)."""
    name = str(group[0]) if len(group) == 1 else f"{group[0]} (+{len(group) - 1} rank files)"
    try:
        key = content_hash(group)
        if key in known:
            return {"name": name, "key": key, "duplicate": True}
        snap = open_snapshot(
            list(group) if len(group) > 1 else group[0], quick_ratio=quick_ratio, expand_ranks=False
        )
        res = render_snapshot(snap, render, fov=fov)
        if not np.isfinite(res.image).all():
            raise DataError("rendered image has NaN/inf values (bad particle data)")
        return {
            "name": name,
            "key": key,
            "image": res.image,
            "time": res.time,
            "center": list(res.center),
            "time_source": snap.time_source,
            "format": snap.format,
            "n_particles": snap.n_particles,
        }
    except (RhoError, OSError, ValueError) as exc:
        return {"name": name, "error": str(exc)}


# --------------------------------------------------------------------------- driver
def ingest_bonsai(
    snapshots: Sequence[str | Path],
    store: str | Path,
    config: IngestConfig = IngestConfig(),
    *,
    progress: Callable[[int, int, str], None] | None = None,
) -> IngestReport:
    """Ingest snapshots into a ``galaxy_merger`` store (created, or appended to).

    Returns an :class:`IngestReport`; raises :class:`RhoError` only for problems that stop the
    whole ingest (bad options, an incompatible existing store) — bad files are reported.
    """
    from rho_core.data.store import create_store, open_store, preflight, store_exists

    store = Path(store)
    preflight(store, "a")  # a writable store location (or an existing store), before rendering
    report = IngestReport(store)
    manifest = Manifest.load(config.params_file) if config.params_file else None
    groups = find_snapshots(snapshots)
    report.n_total = len(groups)
    # Existing store: its keys (idempotence), its field of view and parameter names.
    known: set[str] = set()
    existing = None
    if store_exists(store):
        existing = open_store(store)
        if existing.kind != KIND:
            raise ConfigError(f"store {store} holds kind {existing.kind!r}, not {KIND!r}")
        known = {k for k in existing.sample_keys() if k}
    render = config.render
    # Parameters per snapshot (cheap, before any rendering; failures are per file).
    params: dict[tuple[Path, ...], dict] = {}
    good: list[tuple[Path, ...]] = []
    for g in groups:
        try:
            params[g] = snapshot_params(g[0], manifest, config.params)
            good.append(g)
        except (RhoError, OSError, json.JSONDecodeError) as exc:
            report.failed.append((str(g[0]), str(exc)))
    names = sorted({k for p in params.values() for k in p}) + ["time"]
    if existing is not None:
        # appending: the store's columns rule; snapshots lacking one fail, extras are ignored
        extra = sorted(set(names) - set(existing.param_names))
        if extra:
            log.warning("parameters %s are not columns of %s; ignored", extra, store)
        names = list(existing.param_names)
        if not names or names[-1] != "time":
            raise ConfigError(
                f"store {store} has no trailing 'time' column: not a Bonsai "
                "ingest store; use another --out"
            )
    for g in list(good):
        missing = [k for k in names[:-1] if k not in params[g]]
        if missing:
            report.failed.append(
                (
                    str(g[0]),
                    f"missing parameter(s) {missing}: give them in "
                    "--params FILE or --param NAME=VALUE",
                )
            )
            good.remove(g)
    fov = render.fov
    if existing is not None:
        stored = existing.provenance.get("render", {})
        if fov is None:
            fov = stored.get("fov_kpc")
        _check_same_view(store, stored, render_provenance(replace(render, fov=fov), fov))
    if fov is None and good:
        fov = _auto_fov(good, render, config.quick_ratio, report)
        good = [g for g in good if str(g[0]) not in {n for n, _ in report.failed}]
    report.fov = fov
    render = replace(render, fov=fov)
    provenance = {
        "source": "bonsai snapshots",
        "render": render_provenance(render, fov),
        "param_sources": "IC sidecar < --params file < --param (time from the snapshot)",
    }
    writer = None
    try:
        done = 0
        for results in _map(good, render, fov, config, frozenset(known)):
            batch_f, batch_p, batch_k = [], [], []
            for g, r in results:
                done += 1
                if progress:
                    progress(done, len(good), r["name"])
                if "error" in r:
                    report.failed.append((r["name"], r["error"]))
                    continue
                if r.get("duplicate") or r["key"] in known:
                    report.skipped += 1
                    continue
                known.add(r["key"])
                row = [params[g][k] for k in names[:-1]] + [r["time"]]
                batch_f.append(r["image"])
                batch_p.append(row)
                batch_k.append(r["key"])
            if not batch_f:
                continue
            if writer is None:
                writer = create_store(
                    store,
                    kind=KIND,
                    spatial_dims=2,
                    param_names=names,
                    field_shape=batch_f[0].shape,
                    provenance=provenance,
                    mode="a",
                )
                # another ingest may have committed snapshots since the store was first read:
                # the keys committed now (read under the writer lock) rule
                committed = {k for k in writer.sample_keys() if k}
                keep = [i for i, k in enumerate(batch_k) if k not in committed]
                report.skipped += len(batch_k) - len(keep)
                batch_f = [batch_f[i] for i in keep]
                batch_p = [batch_p[i] for i in keep]
                batch_k = [batch_k[i] for i in keep]
                known |= committed
                if not batch_f:
                    continue
            writer.append(np.stack(batch_f), np.asarray(batch_p, np.float64), keys=batch_k)
            report.added += len(batch_f)
    except BaseException:
        if writer is not None:
            writer.abort()  # keeps what was committed; removes a store left empty
            writer = None
        raise
    finally:
        if writer is not None:
            writer.close()
    for name, reason in report.failed:  # callers report them (the CLI, the Prefect task)
        log.debug("skipped %s: %s", name, reason)
    return report


_VIEW_KEYS = (
    "image_size",
    "fov_kpc",
    "projection",
    "kernel",
    "sigma_px",
    "components",
    "with_dm",
    "log",
    "floor",
    "center",
)


def _check_same_view(store: Path, stored: dict, new: dict) -> None:
    """Appending must not mix images made differently (the store's provenance describes all)."""
    diff = [k for k in _VIEW_KEYS if k in stored and stored.get(k) != new.get(k)]
    if diff:
        detail = ", ".join(f"{k}: store {stored.get(k)!r} vs now {new.get(k)!r}" for k in diff)
        raise ConfigError(
            f"store {store} was rendered differently ({detail}); use the same "
            "options or another --out"
        )


def _auto_fov(good, render, quick_ratio, report) -> float | None:
    """Largest auto field of view over runs, each from its earliest snapshot."""
    runs: dict[str, tuple[float, tuple[Path, ...]]] = {}
    for g in good:
        parsed = parse_snapshot_name(g[0])
        t = parsed.time if parsed else 0.0
        key = _run_key(g)
        if key not in runs or t < runs[key][0]:
            runs[key] = (t, g)
    best = None
    for _, g in runs.values():
        try:
            snap = open_snapshot(
                list(g) if len(g) > 1 else g[0], quick_ratio=quick_ratio, expand_ranks=False
            )
            f = auto_fov(snap, render)
            best = f if best is None else max(best, f)
        except (RhoError, OSError) as exc:
            report.failed.append((str(g[0]), str(exc)))
    return best


def _map(good, render, fov, config: IngestConfig, known: frozenset):
    """Yield windows ``[(group, result)]`` in input order, computed serially or through Dask."""
    w = max(1, config.window)
    windows = [good[i : i + w] for i in range(0, len(good), w)]
    if config.workers <= 1 and config.address is None:
        for win in windows:
            yield [(g, _process(g, render, fov, config.quick_ratio, known)) for g in win]
        return
    from rho_core.data.spherical_harmonics import dask_client

    # a local cluster, or the scheduler at `config.address` (ConfigError when unreachable)
    with dask_client(config.workers, config.address) as client:
        for win in windows:
            futs = [
                client.submit(_process, g, render, fov, config.quick_ratio, known, pure=False)
                for g in win
            ]
            yield list(zip(win, client.gather(futs), strict=True))


def report_dict(report: IngestReport) -> dict:
    d = asdict(report)
    d["store"] = str(report.store)
    return d
