"""`rho generate`: write synthetic 3-D datasets into a store.

- ``rho generate spherical-harmonics --out STORE [--size 32] [--l-max 6] [--convention real|paper]
  [--workers N] [--scheduler ADDR] [--lm L,M ...] [--overwrite|--append]``
- ``rho generate hydrogen --out STORE [--size 32] [--n-max 3] [--half-width A0]
  [--overwrite|--append]``
- ``rho generate gaussian-random-field --out STORE --size N --dims D --amplitude A1[,A2...]
  --spectral-index n1[,n2...] --realizations K [--seed S] [--lognormal] [--workers W]
  [--overwrite|--append]`` (``--append`` adds realisations made with another ``--seed``)
- ``rho generate rotational-spectra --out STORE [--points 8192] [--f-min MHZ] [--f-max MHZ]
  [--molecule A,B,C ...|--rotors N] [--per-rotor K] [--temperature LO,HI] [--mu-max D]
  [--mass AMU] [--resolution MHZ] [--profile gaussian|voigt] [--normalization log|asinh|...]``
  (1-D; docs/spectra.md)
"""

from __future__ import annotations

import argparse
import logging
import re
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a synthetic dataset (spherical harmonics, hydrogen orbitals) into a store",
        description="Generate a synthetic 3-D dataset into a Zarr store.",
    )
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    gsub = p.add_subparsers(dest="dataset", metavar="DATASET")

    sh = gsub.add_parser(
        "spherical-harmonics",
        help="one volume per (l, m) of the spherical harmonics (the paper's 3-D experiment)",
        description="One voxel volume per (l, m): the real spherical harmonics for 0 ≤ l ≤ l_max, "
        "−l ≤ m ≤ l (default), or the paper's Re Y_l^m for 0 ≤ m ≤ l.",
    )
    sh.add_argument("--out", required=True, help="store path (a directory)")
    sh.add_argument("--size", type=int, default=32, help="voxels per axis (default 32)")
    sh.add_argument("--l-max", type=int, default=6, help="highest degree l (default 6)")
    sh.add_argument(
        "--convention",
        choices=["real", "paper"],
        default="real",
        help="real: orthonormal real harmonics, -l ≤ m ≤ l (default); paper: Re Y_l^m, 0 ≤ m ≤ l",
    )
    sh.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Dask worker processes of a local cluster (0/1: serial, default 0)",
    )
    sh.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    sh.add_argument(
        "--lm",
        action="append",
        default=None,
        metavar="L,M",
        help="generate only these (l, m) (repeatable), e.g. --lm 5,2",
    )
    _mode_args(sh)
    sh.set_defaults(func=_run_sh)

    hy = gsub.add_parser(
        "hydrogen",
        help="hydrogen-like orbital densities |ψ_nlm|² (non-negative, spanning decades)",
        description="One |ψ_nlm|² volume per orbital, 1 ≤ n ≤ n_max, 0 ≤ l < n, −l ≤ m ≤ l.",
    )
    hy.add_argument("--out", required=True, help="store path (a directory)")
    hy.add_argument("--size", type=int, default=32, help="voxels per axis (default 32)")
    hy.add_argument("--n-max", type=int, default=3, help="highest n (default 3)")
    hy.add_argument(
        "--half-width",
        type=float,
        default=None,
        help="common box half-width in Bohr radii (default per orbital: 2n² + 5n)",
    )
    _mode_args(hy)
    hy.set_defaults(func=_run_hydrogen)

    # --- gaussian-random-field (issue 13) ---
    grf = gsub.add_parser(
        "gaussian-random-field",
        help="Gaussian / log-normal random fields with a power-law spectrum A·|κ|^n",
        description="K independent realisations per (amplitude, spectral index) of a periodic "
        "Gaussian random field with E|F[κ]|²/N^D = A·|κ|^n (κ ≠ 0), F[0] = 0 (docs/data.md).",
    )
    grf.add_argument("--out", required=True, help="store path (a directory; must not exist)")
    grf.add_argument("--size", type=int, required=True, help="points per axis N")
    grf.add_argument("--dims", type=int, required=True, help="spatial dimensions D (1, 2 or 3)")
    grf.add_argument("--amplitude", required=True, help="amplitudes A1[,A2,...] (> 0)")
    grf.add_argument("--spectral-index", required=True, help="spectral indices n1[,n2,...]")
    grf.add_argument("--realizations", type=int, required=True, help="realisations per condition")
    grf.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    grf.add_argument(
        "--lognormal", action="store_true", help="δ = exp(g − σ_g²/2) − 1 of the Gaussian g"
    )
    grf.add_argument(
        "--workers", type=int, default=0, help="Dask worker processes (0/1: serial, default 0)"
    )
    g = grf.add_mutually_exclusive_group()
    g.add_argument("--overwrite", action="store_true", help="replace an existing store")
    g.add_argument(
        "--append", action="store_true",
        help="add these realisations to an existing store (needs another --seed)",
    )  # fmt: skip
    # let "--spectral-index -1,-2.5" read as a value, not as an option
    grf._negative_number_matcher = re.compile(
        r"^-\d*\.?\d+(e[-+]?\d+)?(,[-+]?\d*\.?\d+(e[-+]?\d+)?)*$"
    )
    grf.set_defaults(func=_run_grf)

    # --- rotational-spectra (issue 16) ---
    rot = gsub.add_parser(
        "rotational-spectra",
        help="rigid-rotor rotational spectra (linear, symmetric, asymmetric tops), 1-D",
        description="Pure rotational absorption spectra computed from rotational constants "
        "(docs/spectra.md): one spectrum per (molecule, T, dipole) on a frequency grid, the "
        "line list stored beside it. Molecules: --molecule A,B,C (MHz, A ≥ B ≥ C; A = 0 for "
        "a linear molecule), repeatable, or --rotors N random asymmetric tops; each gets "
        "--per-rotor random (T, mu_a, mu_b, mu_c) draws.",
    )
    rot.add_argument("--out", required=True, help="store path (a directory; must not exist)")
    rot.add_argument("--points", type=int, default=8192, help="grid points (≤ 65536; 8192)")
    rot.add_argument("--f-min", type=float, default=2000.0, help="lowest frequency, MHz (2000)")
    rot.add_argument("--f-max", type=float, default=26000.0, help="highest frequency, MHz (26000)")
    rot.add_argument(
        "--molecule", action="append", default=None, metavar="A,B,C",
        help="rotational constants in MHz (repeatable); A = 0: linear molecule",
    )  # fmt: skip
    rot.add_argument("--rotors", type=int, default=6, help="random asymmetric tops (default 6)")
    rot.add_argument("--per-rotor", type=int, default=8, help="(T, μ) draws per molecule (8)")
    rot.add_argument(
        "--temperature", default="2,10", metavar="LO,HI", help="T range in K, log-uniform (2,10)"
    )
    rot.add_argument("--mu-max", type=float, default=3.0, help="dipole components ≤ this, D (3)")
    rot.add_argument("--mass", type=float, default=50.0, help="molecular mass, amu (Doppler)")
    rot.add_argument(
        "--resolution", type=float, default=None,
        help="instrument FWHM in MHz (default 2.5 grid steps)",
    )  # fmt: skip
    rot.add_argument("--profile", choices=["gaussian", "voigt"], default="gaussian")
    rot.add_argument("--lorentz-hwhm", type=float, default=0.0, help="Voigt Lorentz HWHM, MHz")
    rot.add_argument(
        "--normalization", choices=["log", "asinh", "minmax", "none"], default="log",
        help="per-store normalisation written with the data (default log)",
    )  # fmt: skip
    rot.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    rot.add_argument("--overwrite", action="store_true", help="replace an existing store")
    rot.set_defaults(func=_run_rotational)


def quiet_dask(args: argparse.Namespace) -> None:
    """Keep the Dask cluster's start/stop chatter (~30 INFO lines) out of the output unless
    ``rho -v``: the command prints its own progress."""
    if getattr(args, "verbose", False):
        return

    def drop(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("distributed")

    # a filter on the output handlers: importing distributed later resets its loggers' levels
    for handler in logging.getLogger().handlers:
        handler.addFilter(drop)


def _mode_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--overwrite", action="store_true", help="replace an existing store")
    g.add_argument("--append", action="store_true", help="append to an existing store")


def _mode(args: argparse.Namespace) -> str:
    return "w" if args.overwrite else "a" if args.append else "w-"


def _progress(desc: str):
    """A ``progress(done, total)`` callback and its closer: a tqdm bar on a terminal, else a
    log line at every 10 % (CI logs, Prefect workers)."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="vol", file=sys.stderr, disable=None)
    log = logging.getLogger("rho.generate")
    last = [-1]

    def update(done: int, total: int) -> None:
        if bar.disable:
            decile = (10 * done) // max(total, 1)
            if decile != last[0]:
                last[0] = decile
                log.info("%s: %d/%d volumes", desc, done, total)
            return
        bar.total = total
        bar.update(done - bar.n)

    return update, bar.close


def _parse_lm(items: list[str] | None) -> list[tuple[int, int]] | None:
    from rho_core.errors import ConfigError

    if not items:
        return None
    out = []
    for item in items:
        try:
            l, m = (int(v) for v in item.split(","))
        except ValueError:
            raise ConfigError(f"--lm takes 'L,M' with two integers, got {item!r}") from None
        out.append((l, m))
    return out


def _count(out: str) -> int:
    """Samples already in the store at ``out`` (0 when there is none)."""
    from rho_core.data.store import open_store, store_exists

    return open_store(out).n if store_exists(out) else 0


def _report(path, before: int) -> None:
    from rho_core.data.store import open_store

    s = open_store(path)
    added = s.n - before if before else s.n
    kept = f"; {before} were already there" if before else ""
    print(f"wrote {added} volumes of shape {s.field_shape} to {path} ({s.n} in all{kept})")


def _check_common(args: argparse.Namespace) -> None:
    """Options shared by the generators, refused before any work with what to change."""
    from rho_core.errors import ConfigError

    if args.size < 2:
        raise ConfigError(f"--size: size must be at least 2 voxels per axis, got {args.size}")
    if getattr(args, "workers", 0) < 0:
        raise ConfigError(f"--workers must be ≥ 0, got {args.workers}")


def _check_sh(args: argparse.Namespace) -> None:
    """``spherical-harmonics``: sizes and counts within :mod:`rho_core.limits` (before any
    allocation: ``--l-max 100000`` would otherwise build a 10¹⁰-entry list)."""
    from rho_core import limits
    from rho_core.errors import ConfigError

    _check_common(args)
    if args.l_max < 0:
        raise ConfigError(f"--l-max: l_max must be ≥ 0, got {args.l_max}")
    n = len(args.lm) if args.lm else None
    limits.check_spherical_harmonics(args.size, args.l_max, args.convention, args.out, n)


def _check_hydrogen(args: argparse.Namespace) -> None:
    import math

    from rho_core import limits
    from rho_core.errors import ConfigError

    _check_common(args)
    if args.n_max < 1:
        raise ConfigError(f"--n-max: n_max must be an integer ≥ 1, got {args.n_max}")
    hw = args.half_width
    if hw is not None and not (math.isfinite(hw) and hw > 0):
        raise ConfigError(f"--half-width must be a finite number > 0 (Bohr radii), got {hw}")
    n = args.n_max * (args.n_max + 1) * (2 * args.n_max + 1) // 6  # Σ n²
    limits.check_count(n, limits.MAX_VOLUMES, "number of orbitals", "--n-max")
    limits.check_grid(args.size, "--size")
    limits.check_disk(n * 4 * args.size**3 / 1.05, args.out, f"{n:,} volumes", "--n-max/--size")


def _run_sh(args: argparse.Namespace) -> int:
    from rho_core.data.spherical_harmonics import generate_spherical_harmonics

    _check_sh(args)
    quiet_dask(args)
    update, close = _progress("spherical harmonics")
    before = _count(args.out) if args.append else 0
    try:
        path = generate_spherical_harmonics(
            args.out,
            size=args.size,
            l_max=args.l_max,
            convention=args.convention,
            workers=args.workers,
            scheduler_address=args.scheduler,
            mode=_mode(args),
            lm=_parse_lm(args.lm),
            progress=update,
        )
    finally:
        close()
    _report(path, before)
    return 0


def _run_hydrogen(args: argparse.Namespace) -> int:
    from rho_core.data.hydrogen import generate_hydrogen

    _check_hydrogen(args)
    update, close = _progress("hydrogen orbitals")
    before = _count(args.out) if args.append else 0
    try:
        path = generate_hydrogen(
            args.out,
            size=args.size,
            n_max=args.n_max,
            mode=_mode(args),
            half_width=args.half_width,
            progress=update,
        )
    finally:
        close()
    _report(path, before)
    return 0


def _floats(text: str, option: str) -> list[float]:
    from rho_core.errors import ConfigError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, got {text!r}") from None


def _run_grf(args: argparse.Namespace) -> int:
    from rho_core.data.random_fields import generate_random_field_store

    quiet_dask(args)
    before = _count(args.out) if args.append else 0
    update, close = _progress("random fields")
    try:
        path = generate_random_field_store(
            args.out,
            size=args.size,
            dims=args.dims,
            amplitudes=_floats(args.amplitude, "--amplitude"),
            spectral_indices=_floats(args.spectral_index, "--spectral-index"),
            realizations=args.realizations,
            seed=args.seed,
            lognormal=args.lognormal,
            workers=args.workers,
            mode=_mode(args),
            progress=update,
        )
    finally:
        close()
    _report(path, before)
    return 0


def _run_rotational(args: argparse.Namespace) -> int:
    from rho_core.data import rotational as R
    from rho_core.errors import ConfigError

    if args.per_rotor < 1 or args.rotors < 1:
        raise ConfigError("--rotors and --per-rotor must be ≥ 1")
    if args.per_rotor * (len(args.molecule) if args.molecule else args.rotors) > 100_000:
        raise ConfigError("more than 100,000 spectra requested; lower --rotors or --per-rotor")
    t_range = _floats(args.temperature, "--temperature")
    if len(t_range) != 2 or not 0 < t_range[0] <= t_range[1]:
        raise ConfigError(
            f"--temperature takes LO,HI in K with 0 < LO ≤ HI, got {args.temperature!r}"
        )
    if args.mu_max <= 0:
        raise ConfigError(f"--mu-max must be > 0 Debye, got {args.mu_max}")
    if args.molecule:
        rotors = []
        for item in args.molecule:
            v = _floats(item, "--molecule")
            if len(v) != 3:
                raise ConfigError(f"--molecule takes A,B,C in MHz, got {item!r}")
            rotors.append(tuple(v))
    else:
        rotors = R.random_rotors(args.rotors, seed=args.seed)
    from pathlib import Path

    if Path(args.out).exists() and not args.overwrite:
        raise ConfigError(f"'{args.out}' already exists; pass --overwrite or choose another --out")
    grid = R.Grid(args.f_min, args.f_max, args.points)
    cond = R.random_conditions(
        rotors, args.per_rotor, seed=args.seed + 1, t_range=tuple(t_range),
        mu_range=(0.0, args.mu_max),
    )  # fmt: skip
    update, close = _progress("rotational spectra")
    try:
        path = R.generate_rotational_store(
            args.out,
            cond,
            grid,
            mass=args.mass,
            resolution=args.resolution,
            profile=args.profile,
            lorentz_hwhm=args.lorentz_hwhm,
            mode="w" if args.overwrite else "w-",
            normalization=None if args.normalization == "none" else args.normalization,
            progress=update,
        )
    finally:
        close()
    _report(path, 0)
    return 0
