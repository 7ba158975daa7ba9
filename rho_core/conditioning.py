"""Conditioning on a dict of physical parameters: the hash and continuous embeddings.

``hash`` (the paper's method, done right)
    ``canonical_params`` writes the dict as a canonical JSON-like string (keys sorted; numbers in
    one spelling, so ``1``, ``1.0``, ``np.int64(1)`` and ``np.float32(1.0)`` agree), its SHA-512
    digest is unpacked to 512 bits b_i and mapped to ±1 (``2 b_i − 1``), and a learned MLP
    projects the 512-vector to the embedding dim. Any number of parameters gives 512 inputs; the
    embedding is exact for seen settings but cannot interpolate between them.
``continuous``
    Each parameter is normalised to [−1, 1] with the training range (``param_low``/``param_high``),
    expanded into deterministic Fourier features ``[u, sin(ω_k u), cos(ω_k u)]`` with ``F``
    log-spaced angular frequencies ω_k from π/2 to 4π, and fed to an MLP. Nearby parameter values
    give nearby embeddings, so unseen in-between settings give in-between fields.
``none``
    Always the learned null embedding.

Every conditioner owns a learned *null* embedding used for a dropped condition (classifier-free
guidance training) and for unconditional sampling (``params=None``).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from rho_core.errors import ConfigError

KINDS = ("hash", "continuous", "none")
HASH_BITS = 512
_MIN_OMEGA = math.pi / 2
_MAX_OMEGA = 4 * math.pi


# --------------------------------------------------------------------------------------------
# Canonical serialisation and the hash embedding
# --------------------------------------------------------------------------------------------


def _canonical_number(value: float | int, key: str) -> str:
    """One spelling per number.

    Integers are written exactly; a float with an integral value below 2**53 is written as that
    integer (``1.0`` → ``1``); other floats are rounded to 12 significant digits and written as
    the shortest float64 repr of the result, so round-off noise such as ``0.1 + 0.2`` hashes like
    ``0.3``. Non-finite values are rejected.
    """
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ConfigError(f"parameter {key!r} is {value}; parameters must be finite numbers")
    if value.is_integer() and abs(value) < 2.0**53:
        return str(int(value))
    rounded = float(format(value, ".12g"))
    if rounded.is_integer() and abs(rounded) < 2.0**53:
        return str(int(rounded))
    return repr(rounded)


def _scalar(value: Any, key: str) -> Any:
    """Unwrap 0-d/1-element tensors and arrays; float32/float16 scalars become the float64 of
    their shortest decimal (``np.float32(0.1)`` → ``0.1``)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ConfigError(
                f"parameter {key!r} is a tensor of shape {tuple(value.shape)}; give a scalar"
            )
        value = value.detach().cpu().numpy().reshape(())[()]
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ConfigError(
                f"parameter {key!r} is an array of shape {value.shape}; give a scalar"
            )
        value = value.reshape(())[()]
    if isinstance(value, np.floating) and value.dtype.itemsize < 8 and np.isfinite(value):
        return float(str(value))
    return value


def _canonical_value(value: Any, key: str) -> str:
    value = _scalar(value, key)
    if isinstance(value, bool | np.bool_):
        return "true" if bool(value) else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, numbers.Integral):
        return _canonical_number(int(value), key)
    if isinstance(value, numbers.Real):
        return _canonical_number(float(value), key)
    raise ConfigError(
        f"parameter {key!r} has unsupported type {type(value).__name__}; "
        "use a number, a bool or a string"
    )


def canonical_params(params: Mapping[str, Any]) -> str:
    """Canonical serialisation of a flat parameter dict, e.g. ``{"a":1,"b":0.5,"c":"x"}``.

    Keys (strings) are sorted; values are numbers (int/float/numpy scalars, 0-d arrays/tensors),
    bools or strings. Integral numbers are written as integers, other floats rounded to 12
    significant digits, so every spelling of the same number serialises the same way; float32
    scalars are read as their shortest decimal. NaN/inf, ``None`` and nested values raise
    ConfigError.
    """
    if not isinstance(params, Mapping):
        raise ConfigError(f"parameters must be a dict, got {type(params).__name__}")
    items = []
    for key in params:
        if not isinstance(key, str):
            raise ConfigError(f"parameter names must be strings, got {key!r}")
        items.append((key, _canonical_value(params[key], key)))
    items.sort(key=lambda kv: kv[0])
    return "{" + ",".join(f"{json.dumps(k, ensure_ascii=True)}:{v}" for k, v in items) + "}"


def hash_digest(params: Mapping[str, Any]) -> bytes:
    """SHA-512 digest (64 bytes) of ``canonical_params(params)`` encoded as UTF-8."""
    return hashlib.sha512(canonical_params(params).encode("utf-8")).digest()


def _bits_pm1(digest: bytes) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(digest, dtype=np.uint8))  # MSB first within each byte
    return bits.astype(np.float32) * 2.0 - 1.0


def hash_embedding(params: Mapping[str, Any]) -> Tensor:
    """The paper's fixed condition code: the 512 SHA-512 digest bits as a ±1 float32 ``(512,)``."""
    return torch.from_numpy(_bits_pm1(hash_digest(params)))


# --------------------------------------------------------------------------------------------
# Parameter tables
# --------------------------------------------------------------------------------------------


def params_to_tensor(
    param_dicts: Sequence[Mapping[str, Any]], param_names: Sequence[str]
) -> Tensor:
    """Stack parameter dicts into a float64 ``(B, P)`` table, columns in ``param_names`` order.

    Raises:
        ConfigError: a dict has a name not in ``param_names`` or lacks one of them, or a value is
            not a finite real number (bools and strings cannot go into the table).
    """
    names = tuple(param_names)
    if isinstance(param_dicts, Mapping):
        param_dicts = [param_dicts]
    rows = []
    for i, d in enumerate(param_dicts):
        if not isinstance(d, Mapping):
            raise ConfigError(f"parameter set {i} must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - set(names))
        missing = [n for n in names if n not in d]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown parameter(s) {unknown}")
            if missing:
                parts.append(f"missing parameter(s) {missing}")
            raise ConfigError(
                f"parameter set {i}: {'; '.join(parts)}; the model expects exactly {list(names)}"
            )
        row = []
        for n in names:
            v = _scalar(d[n], n)
            if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
                raise ConfigError(f"parameter {n!r} must be a real number, got {v!r}")
            fv = float(v)
            if not math.isfinite(fv):
                raise ConfigError(f"parameter {n!r} is {fv}; parameters must be finite")
            row.append(fv)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(names))


# --------------------------------------------------------------------------------------------
# Conditioner modules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionerConfig:
    """Configuration of the condition embedding.

    Attributes:
        kind: ``"hash"``, ``"continuous"`` or ``"none"``.
        dim: output embedding size (the U-Net's ``cond_dim``).
        param_names: parameter names, the column order of the ``(B, P)`` parameter table.
        param_low, param_high: per-parameter training range (``continuous`` maps it to [−1, 1]);
            may be empty for ``hash``/``none``.
        fourier_features: number F of log-spaced frequencies per parameter (``continuous``).
        log_params: names of positive parameters that ``continuous`` embeds as ``log p`` (their
            range ``[low, high]`` then maps to [−1, 1] in ``log``): a scale parameter spanning a
            decade (an amplitude 0.3…3.2) gets equal resolution per factor, not per unit.
    """

    kind: Literal["hash", "continuous", "none"]
    dim: int
    param_names: tuple[str, ...] = ()
    param_low: tuple[float, ...] = ()
    param_high: tuple[float, ...] = ()
    fourier_features: int = 16
    log_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_params", tuple(str(n) for n in self.log_params))
        object.__setattr__(self, "param_names", tuple(str(n) for n in self.param_names))
        object.__setattr__(self, "param_low", tuple(float(v) for v in self.param_low))
        object.__setattr__(self, "param_high", tuple(float(v) for v in self.param_high))
        if self.kind not in KINDS:
            raise ConfigError(f"unknown conditioning kind {self.kind!r}; choose one of {KINDS}")
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ConfigError(f"conditioning dim must be a positive integer, got {self.dim!r}")
        if len(set(self.param_names)) != len(self.param_names):
            raise ConfigError(f"duplicate parameter names in {self.param_names}")
        if self.kind == "continuous":
            p = len(self.param_names)
            if p == 0:
                raise ConfigError("continuous conditioning needs at least one parameter name")
            if len(self.param_low) != p or len(self.param_high) != p:
                raise ConfigError(
                    f"continuous conditioning needs param_low and param_high with {p} values each "
                    f"(got {len(self.param_low)} and {len(self.param_high)})"
                )
            for n, lo, hi in zip(self.param_names, self.param_low, self.param_high, strict=True):
                if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                    raise ConfigError(
                        f"parameter {n!r}: need finite param_low < param_high, got {lo}, {hi}"
                    )
            if self.fourier_features < 1:
                raise ConfigError(f"fourier_features must be >= 1, got {self.fourier_features}")
            for n in self.log_params:
                if n not in self.param_names:
                    raise ConfigError(
                        f"log_params names {n!r}, which is not a conditioning parameter "
                        f"{list(self.param_names)}"
                    )
                low = self.param_low[self.param_names.index(n)]
                if low <= 0:
                    raise ConfigError(
                        f"parameter {n!r} is in log_params but its training range starts at "
                        f"{low}; log needs values > 0"
                    )
        elif self.log_params:
            raise ConfigError(
                f"log_params {list(self.log_params)} applies to continuous conditioning only, "
                f"not {self.kind!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists for tuples)."""
        d = asdict(self)
        for k in ("param_names", "param_low", "param_high", "log_params"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConditionerConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(d))


class _Conditioner(nn.Module):
    """Shared part: the learned null embedding and the drop logic.

    ``forward(params (B, P) float64 | None, drop (B,) bool | None = None, batch_size=None)``
    → ``(B, dim)``. Rows with ``drop[i]`` (or all rows when ``params is None``) get the null
    embedding. With neither ``params`` nor ``drop`` the batch size comes from ``batch_size``
    (default 1).
    """

    def __init__(self, cfg: ConditionerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.null = nn.Parameter(torch.zeros(cfg.dim))

    def _embed(self, params: Tensor) -> Tensor:  # (B, P) float64 → (B, dim)
        raise NotImplementedError

    def forward(
        self, params: Tensor | None, drop: Tensor | None = None, batch_size: int | None = None
    ) -> Tensor:
        if params is None:
            b = drop.shape[0] if drop is not None else (batch_size or 1)
            return self.null.unsqueeze(0).expand(b, -1)
        if params.ndim != 2 or params.shape[1] != len(self.cfg.param_names):
            raise ConfigError(
                f"conditioning parameters must have shape (B, {len(self.cfg.param_names)}) for "
                f"{list(self.cfg.param_names)}, got {tuple(params.shape)}"
            )
        out = self._embed(params)
        if drop is not None:
            if drop.shape != (params.shape[0],):
                raise ConfigError(
                    f"drop must have shape ({params.shape[0]},), got {tuple(drop.shape)}"
                )
            keep = (~drop.to(device=out.device, dtype=torch.bool)).unsqueeze(1)
            out = torch.where(keep, out, self.null.to(out.dtype).unsqueeze(0))
        return out


class NullConditioner(_Conditioner):
    """Kind ``none``: every row gets the learned null embedding (``params`` only sets B)."""

    def forward(
        self, params: Tensor | None, drop: Tensor | None = None, batch_size: int | None = None
    ) -> Tensor:
        if params is not None:
            batch_size = params.shape[0]
        return super().forward(None, drop, batch_size)


class HashConditioner(_Conditioner):
    """Kind ``hash``: ±1 SHA-512 bits of each row's parameter dict → MLP(512 → dim → dim).

    The bits of a row depend only on its values (rows map to dicts ``{name: value}`` in
    ``param_names`` order), and are cached (at most ``cache_size`` rows, LRU) as packed digests.
    """

    def __init__(self, cfg: ConditionerConfig, cache_size: int = 100_000) -> None:
        super().__init__(cfg)
        self.proj = nn.Sequential(
            nn.Linear(HASH_BITS, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim)
        )
        self._cache: OrderedDict[tuple[float, ...], bytes] = OrderedDict()
        self._cache_size = cache_size

    def bits(self, params: Tensor) -> Tensor:
        """±1 hash bits ``(B, 512)`` float32 (CPU) of each row of ``params`` ``(B, P)``."""
        rows = params.detach().to("cpu", torch.float64).tolist()
        digests = []
        for row in rows:
            key = tuple(row)
            digest = self._cache.get(key)
            if digest is None:
                digest = hash_digest(dict(zip(self.cfg.param_names, row, strict=True)))
                self._cache[key] = digest
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            digests.append(digest)
        packed = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(rows), 64)
        bits = np.unpackbits(packed, axis=1).astype(np.float32) * 2.0 - 1.0
        return torch.from_numpy(bits)

    def _embed(self, params: Tensor) -> Tensor:
        w = self.proj[0].weight
        return self.proj(self.bits(params).to(device=w.device, dtype=w.dtype))


class ContinuousConditioner(_Conditioner):
    """Kind ``continuous``: normalise to [−1, 1], Fourier features, MLP(P·(2F+1) → dim → dim).

    u = 2 (p − low)/(high − low) − 1 (with ``log p``, ``log low``, ``log high`` for the names in
    ``cfg.log_params``); features per parameter ``[u, sin(ω_k u), cos(ω_k u)]`` with
    ω_k = π/2 · 8^{k/(F−1)}, k = 0…F−1 (π/2 … 4π; fixed, no random draws).
    """

    def __init__(self, cfg: ConditionerConfig) -> None:
        super().__init__(cfg)
        f = cfg.fourier_features
        ratio = _MAX_OMEGA / _MIN_OMEGA
        k = torch.arange(f, dtype=torch.float64) / max(f - 1, 1)
        self.register_buffer("omega", (_MIN_OMEGA * ratio**k).float(), persistent=False)
        is_log = [n in cfg.log_params for n in cfg.param_names]
        low = [math.log(v) if lg else v for v, lg in zip(cfg.param_low, is_log, strict=True)]
        high = [math.log(v) if lg else v for v, lg in zip(cfg.param_high, is_log, strict=True)]
        self.register_buffer("is_log", torch.tensor(is_log, dtype=torch.bool), persistent=False)
        self.register_buffer("low", torch.tensor(low, dtype=torch.float64), persistent=False)
        self.register_buffer("high", torch.tensor(high, dtype=torch.float64), persistent=False)
        n_in = len(cfg.param_names) * (2 * f + 1)
        self.mlp = nn.Sequential(nn.Linear(n_in, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))

    def normalise(self, params: Tensor) -> Tensor:
        """Map columns from [low, high] to [−1, 1] (float64, on the CPU) → float32 ``(B, P)``;
        the ``log_params`` columns in log (a value ≤ 0 there raises ``ConfigError``)."""
        p = params.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(p).all()):
            raise ConfigError("conditioning parameters contain NaN/inf")
        is_log = self.is_log.cpu()
        if bool(is_log.any()):
            bad = (p <= 0) & is_log
            if bool(bad.any()):
                col = int(bad.any(dim=0).nonzero()[0])
                raise ConfigError(
                    f"parameter {self.cfg.param_names[col]!r} must be > 0 (the model embeds its "
                    f"log), got {float(p[:, col].min())}"
                )
            p = torch.where(is_log, p.clamp_min(1e-300).log(), p)
        low, high = self.low.cpu(), self.high.cpu()
        return (2.0 * (p - low) / (high - low) - 1.0).float()

    def features(self, params: Tensor) -> Tensor:
        """Fourier features ``(B, P·(2F+1))`` of ``params`` ``(B, P)``."""
        u = self.normalise(params).to(self.omega.device)
        ang = u.unsqueeze(-1) * self.omega  # (B, P, F)
        feats = torch.cat([u.unsqueeze(-1), torch.sin(ang), torch.cos(ang)], dim=-1)
        return feats.flatten(1)

    def _embed(self, params: Tensor) -> Tensor:
        w = self.mlp[0].weight
        return self.mlp(self.features(params).to(device=w.device, dtype=w.dtype))


def build_conditioner(cfg: ConditionerConfig) -> nn.Module:
    """The conditioner module for ``cfg.kind`` (see the module docstring)."""
    if cfg.kind == "hash":
        return HashConditioner(cfg)
    if cfg.kind == "continuous":
        return ContinuousConditioner(cfg)
    return NullConditioner(cfg)
