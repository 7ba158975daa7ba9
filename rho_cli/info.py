"""`rho info STORE [--json]` and `rho normalize STORE --transform T`: describe or normalise a store.

``rho info`` prints kind, sample count, shapes, parameter names and ranges, normalisation and
provenance; ``--json`` prints the same as one JSON object. ``rho normalize`` fits a normalisation
out of core (Dask) and writes it into the store attrs.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="describe a store: kind, samples, shapes, parameters, normalisation",
        description="Describe a ρ-Diffusion store.",
    )
    p.add_argument("store", metavar="STORE", help="store path (a directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_info)

    n = sub.add_parser(
        "normalize",
        help="fit a normalisation on a store (out of core) and write it into its attrs",
        description="Fit min/max/mean/std/percentiles with Dask and store the transform.",
    )
    n.add_argument("store", metavar="STORE", help="store path (a directory)")
    n.add_argument(
        "--transform",
        choices=["minmax", "standard", "asinh", "log", "identity"],
        default="minmax",
        help="minmax (default; bounded fields), standard, asinh (signed, many decades), "
        "log (non-negative, many decades) or identity",
    )
    n.add_argument("--scale", type=float, default=None, help="asinh scale (default median |x|)")
    n.add_argument("--floor", type=float, default=None, help="log floor (default max·1e-6)")
    n.set_defaults(func=_run_normalize)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def format_summary(s: dict) -> str:
    """Human-readable lines of :meth:`Store.summary`."""
    lines = [
        f"store        {s['path']}",
        f"kind         {s['kind']} (schema_version {s['schema_version']})",
        f"samples      {s['n_samples']}",
        f"field shape  {tuple(s['field_shape'])}  (C, *spatial; {s['spatial_dims']}-D)",
        f"chunking     {s['samples_per_chunk']} samples per chunk, "
        f"{s['bytes_uncompressed'] / 2**20:.1f} MiB uncompressed",
        "parameters   "
        + (
            (",\n" + " " * 13 if len(s["param_ranges"]) > 3 else ", ").join(
                f"{k} ∈ [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else f"{k} (no samples)"
                for k, (lo, hi) in s["param_ranges"].items()
            )
            or "(none)"
        ),
    ]
    norm = s.get("normalization")
    if norm:
        keys = [
            k for k in ("min", "max", "mean", "std", "scale", "floor") if norm.get(k) is not None
        ]
        detail = ", ".join(f"{k}={_fmt(float(norm[k]))}" for k in keys)
        lines.append(f"normalisation {norm.get('transform')} ({detail})")
    else:
        lines.append("normalisation (none: identity)")
    if s.get("has_sample_keys"):
        lines.append("sample keys  yes")
    prov = s.get("provenance") or {}
    for k, v in prov.items():  # nested dicts (e.g. the render settings) one key per line
        nested = isinstance(v, dict) and v
        items = [(f"{k}.{k2}", v2) for k2, v2 in v.items()] if nested else [(k, v)]
        lines.extend(f"provenance   {name}: {val}" for name, val in items)
    return "\n".join(lines)


def _run_info(args: argparse.Namespace) -> int:
    from rho_core.data.store import open_store

    s = open_store(args.store).summary()
    if args.json:
        print(json.dumps(s, indent=2, default=float))
    else:
        print(format_summary(s))
    return 0


def _run_normalize(args: argparse.Namespace) -> int:
    from rho_core.data.normalization import fit_normalization
    from rho_core.errors import ConfigError

    for opt, value, needs in (("--scale", args.scale, "asinh"), ("--floor", args.floor, "log")):
        if value is not None and args.transform != needs:
            raise ConfigError(
                f"{opt} applies to --transform {needs} only (got --transform {args.transform}); "
                f"drop {opt} or use --transform {needs}"
            )
    d = fit_normalization(
        args.store, args.transform, scale=args.scale, floor=args.floor, write=True
    )
    shown = {k: d[k] for k in ("transform", "min", "max", "mean", "std", "scale", "floor")}
    print(json.dumps(shown))
    return 0
