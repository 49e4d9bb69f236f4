"""User-facing errors: every message names the file, row, field or key at fault."""
from __future__ import annotations


class CtrGraphError(Exception):
    """Base class of the errors ctrgraph reports to users (the CLI prints them and exits 2)."""


class DataError(CtrGraphError):
    """Bad or missing input data (file, column, value)."""


class ConfigError(CtrGraphError):
    """Unknown or invalid configuration key or value, unknown model or dataset."""


class RunFileError(CtrGraphError):
    """A file of a run directory (checkpoint, config, vocabulary) that is tampered with, truncated,
    corrupt, foreign to the run or unsafe to load; the message names the file."""
