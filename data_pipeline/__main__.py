"""`python -m data_pipeline [hydra overrides]`: raw corpora in, token shards + manifest + report out."""

from __future__ import annotations

import os
import sys

# datatrove logs through loguru at DEBUG by default; the console shows progress bars and the report,
# the full logs go to <output_dir>/logs/<stage>/logs/. Must be set before loguru is imported.
os.environ.setdefault("LOGURU_LEVEL", "WARNING")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from data_pipeline.config import PreprocessConfig, register_configs  # noqa: E402
from shard_format.errors import ConfigError  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="preprocess")
def main(dict_cfg: DictConfig) -> None:
    from data_pipeline.run import run_pipeline
    from data_pipeline.slurm_jobs import StageFailed
    from data_pipeline.wandb_log import WandbLoggingError

    cfg: PreprocessConfig = OmegaConf.to_object(dict_cfg)
    try:
        run_pipeline(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except StageFailed as exc:  # a Slurm job failed; the message holds its log's tail
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except WandbLoggingError as exc:  # the output is complete; only its W&B run is missing
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
