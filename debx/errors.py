"""Errors a user can cause. The CLI prints the message on one line and exits 2."""


class DebxError(Exception):
    """Base class for every error caused by user input (paths, data, flags, checkpoints)."""

    exit_code = 2


class CheckpointError(DebxError):
    """A folder that is not a usable checkpoint (missing/corrupt files, unsupported model_type)."""


class DataError(DebxError):
    """A missing data folder or split, a malformed row, an unknown label, an empty file."""


class ConfigError(DebxError):
    """A flag or config value that cannot be honoured."""


class MissingDependencyError(DebxError):
    """An optional stack (onnxruntime, TensorRT, a GPU) is needed and absent; the message says how to get it."""


class GateFailed(DebxError):
    """An accuracy or parity gate failed. Exit code 1 (the check ran, the candidate lost)."""

    exit_code = 1


def check_at_least(flag: str, value, minimum: int = 1) -> None:
    """ConfigError unless `value` is None or an integer >= minimum (sizes, counts, threads): `flag` names it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{flag} must be an integer >= {minimum}, got {value!r}")
