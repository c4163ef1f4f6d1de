"""The error types both sides raise; each message names the offending config key, file or URL."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


class StorageError(ValueError):
    """A URL names a protocol that fsspec does not know, or whose package is not installed."""


def require(condition: bool, key: str, message: str) -> None:
    """ConfigError("<key>: <message>") unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


class InputError(ValueError):
    """A file or folder the user named (a shard folder, a checkpoint, a tokenizer) is missing or is not
    what it should be; the message names it."""
