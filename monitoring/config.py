"""The `logging` config group, shared by `python -m data_pipeline` and `python -m pretrain.train`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from shard_format.errors import require

LOGGING_MODES = ("online", "offline", "disabled")


@dataclass
class LoggingConfig:
    mode: str = "offline"  # online | offline | disabled (W&B mode; the console always logs)
    project: str = "llm-pretrain"
    entity: Optional[str] = None
    run_name: Optional[str] = None
    log_every: int = 10  # training steps between log lines (the pipeline logs once, at its end)
    tags: list[str] = field(default_factory=list)

    def validate(self) -> LoggingConfig:
        require(self.mode in LOGGING_MODES, "logging.mode", f"{self.mode!r}: expected one of {LOGGING_MODES}")
        require(bool(self.project), "logging.project", "empty")
        require(self.log_every >= 1, "logging.log_every", f"{self.log_every}: must be positive")
        return self
