"""Project exceptions: errors a user can cause, each with a message that says what to change.

The CLI prints these on one line and exits non-zero; internal invariants use ``assert``.
"""


class RhoError(Exception):
    """Base class for every error a user can cause (bad input, bad config, bad files)."""


class ConfigError(RhoError, ValueError):
    """An invalid configuration value or argument (unknown sampler, steps > T, bad size, ...)."""


class DataError(RhoError, ValueError):
    """Invalid data: wrong shapes or dtypes, NaN/inf values, malformed or truncated files."""


class StoreError(RhoError):
    """A Zarr store that is missing, not a ρ-Diffusion store, of a foreign schema, or in use."""


class CheckpointError(RhoError):
    """A checkpoint that is missing, corrupt, or incompatible with the requested use."""
