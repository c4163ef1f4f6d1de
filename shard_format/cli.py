"""How a command ends on a user's mistake: one line, `error: <key or file>: <what is wrong>`, exit code 2,
never a traceback. Used by every entry point (`python -m data_pipeline`, `python -m pretrain.*`)."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from shard_format.errors import ConfigError, InputError, StorageError, require

T = TypeVar("T")

# the project's Hydra config folder
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
USER_ERRORS = (ConfigError, StorageError, InputError)


def exit_on_user_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """A command's entry point whose user mistakes end it with one line, `error: <message>`, and exit
    code 2, not a traceback. Under a multi-rank launcher a config error is printed by rank 0 only (every
    rank fails alike); a missing file may be one rank's, so the other ranks print theirs, naming the rank."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as exc:
            rank = os.environ.get("RANK", "0")
            if rank == "0":
                print(f"error: {exc}", file=sys.stderr, flush=True)
            elif not isinstance(exc, ConfigError):
                print(f"error (rank {rank}): {exc}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapped


def hydra_error_line(exc: BaseException) -> str:
    """One line from a Hydra composition error: the key (OmegaConf's full_key) and what is wrong with it."""
    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    if key and getattr(cause, "msg", None):
        what = cause.msg.splitlines()[0]
        override = re.search(r"(?:Could not override '|Error merging override \+?)([^'=]+)", str(exc))
        if override and override.group(1) != key:  # OmegaConf names the level where the path broke off
            return f"{override.group(1)}: {what} (at {key})"
        return f"{key}: {what}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[1].startswith("Available options in"):  # a group option that does not exist
        options = [line for line in lines[2:] if not line.endswith("_schema") and not line.startswith(("Config search",
                                                                                                      "provider="))]
        return f"{lines[0]}; {lines[1].rstrip(':').lower()}: {', '.join(options)}"
    return lines[0] if lines else type(exc).__name__


def check_overrides(config_dir: Path, config_name: str, argv: Sequence[str]) -> None:
    """Compose `config_name` with the command line's overrides once before Hydra does, so that a wrong key,
    type or group option is one line; a command line with Hydra's own flags (--cfg, -m, --help) is left
    to Hydra. The structured-config schemas must be registered already."""
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            compose(config_name=config_name, overrides=list(argv))
    except HydraException as exc:
        raise ConfigError(hydra_error_line(exc)) from None


def _check_keys(node: Any, schema: type, prefix: str) -> None:
    """Keys that Hydra let through but the schema lacks (a `+key=value` override adds them, and
    OmegaConf.to_object then drops them silently)."""
    from omegaconf import DictConfig

    hints = typing.get_type_hints(schema)
    for key in node.keys():
        full = f"{prefix}{key}"
        require(key in hints, full, f"unknown key (not in {schema.__name__})")
        if dataclasses.is_dataclass(hints[key]):
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
                _check_keys(child, hints[key], f"{full}.")


def typed_config(dict_cfg: Any, schema: type[T]) -> T:
    """The `schema` dataclass from Hydra's DictConfig: unknown keys, missing values and broken
    interpolations are a ConfigError naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    _check_keys(dict_cfg, schema, "")
    try:
        cfg = OmegaConf.to_object(dict_cfg)
    except MissingMandatoryValue as exc:
        raise ConfigError(f"{exc.full_key}: missing value") from exc
    require(isinstance(cfg, schema), "<root>", f"expected a {schema.__name__}, got {type(cfg).__name__}")
    return cfg
