"""`python -m data_pipeline [hydra overrides]`: raw corpora in, token shards + manifest + report out."""

from __future__ import annotations

import os
import sys

# datatrove logs through loguru at DEBUG by default; the console shows progress bars and the report,
# the full logs go to <output_dir>/logs/<stage>/logs/. Must be set before loguru is imported.
os.environ.setdefault("LOGURU_LEVEL", "WARNING")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from data_pipeline.config import PreprocessConfig, register_configs  # noqa: E402
from shard_format.cli import CONF_DIR, check_overrides, exit_on_user_error, typed_config  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="preprocess")
@exit_on_user_error
def main(dict_cfg: DictConfig) -> None:
    from data_pipeline.run import run_pipeline
    from data_pipeline.slurm_jobs import StageFailed
    from data_pipeline.wandb_log import WandbLoggingError

    cfg = typed_config(dict_cfg, PreprocessConfig)
    try:
        run_pipeline(cfg)
    except StageFailed as exc:  # a Slurm job failed; the message holds its log's tail
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except WandbLoggingError as exc:  # the output is complete; only its W&B run is missing
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    exit_on_user_error(check_overrides)(CONF_DIR, "preprocess", sys.argv[1:])
    main()
