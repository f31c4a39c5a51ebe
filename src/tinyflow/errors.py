"""Errors that reach the user as one clear paragraph (no traceback unless HYDRA_FULL_ERROR=1)."""

from __future__ import annotations


class TinyflowError(Exception):
    """A problem the user can fix: the message names the field or input and the fix."""


class ConfigError(TinyflowError):
    """A config value is invalid."""


class DataError(TinyflowError):
    """A dataset is missing or malformed."""


class BudgetError(TinyflowError):
    """Nothing fits the device's SRAM / flash budget."""


class CheckpointError(TinyflowError):
    """A checkpoint is missing, corrupt or from another arch."""
