"""`python -m pretrain.train [hydra overrides]`: config → model, data, engine → Trainer.fit().

Launch it as one process, with `torchrun --nproc_per_node N`, with the `deepspeed` launcher, or
with `srun`: rank, world size and the rendezvous come from whichever launched it.
"""

from __future__ import annotations

import os
import random
import sys

import hydra
from omegaconf import DictConfig

from pretrain.config import ConfigError, TrainConfig, from_hydra, register_configs, to_dict, validate, validate_against_manifest

register_configs()


def run(cfg: TrainConfig) -> int:
    """Train; the process exit code: 0, or REQUEUE_EXIT_CODE when a stop signal ended the run early."""
    from pretrain.preemption import StopOnSignal, StopSignals

    signals = StopSignals().install()  # before anything slow: a signal during start-up must not kill us

    import numpy as np
    import torch

    from data_pipeline import manifest as manifest_lib
    from pretrain import checkpoint, distributed
    from pretrain.callbacks import CheckpointCallback, EvalCallback, MetricsCallback
    from pretrain.data import DataConfig, build_train_batches
    from pretrain.engine import build_engine, init_distributed
    from pretrain.evaluate import evaluate
    from pretrain.metrics import MetricsLogger, peak_tflops
    from pretrain.model import ModelConfig, Transformer, flops_per_token
    from pretrain.trainer import Trainer

    env = distributed.detect()
    sizes = validate(cfg, env.world_size)  # every config error surfaces here, before any model is built
    manifest = manifest_lib.read(cfg.data.path)
    model_cfg = ModelConfig(**cfg.model.model_kwargs(validate_against_manifest(cfg, manifest))).validate()
    distributed.export_env(env)
    torch.set_num_threads(cfg.threads_per_rank)
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)

    resume = checkpoint.resolve_resume(cfg.checkpoint.resume, cfg.checkpoint.dir)
    resume_state = checkpoint.read_state(resume) if resume else None
    universal = resume_state is not None and resume_state["world_size"] != env.world_size
    if universal and resume_state["global_batch_size"] != sizes.global_batch_size:
        raise ConfigError(f"batch.global_batch_size: {sizes.global_batch_size}, but the checkpoint {resume} was trained "
                          f"with {resume_state['global_batch_size']}: keep it to resume on another number of ranks")

    init_distributed(env)
    model = Transformer(model_cfg)
    if universal:
        checkpoint.convert_to_universal(resume, env.rank)
    engine, _ = build_engine(model, cfg, env.world_size, load_universal=universal)
    batches = build_train_batches(DataConfig(cfg.data.path, cfg.data.seq_len, dict(cfg.data.weights), cfg.data.seed),
                                  sizes.micro_batch_size, env.rank, env.world_size, sizes.global_batch_size)
    trainer = Trainer(engine, batches, sizes.grad_accum_steps, cfg.max_steps)
    if resume:
        trainer.load_state_dict(checkpoint.load(engine, resume, env.rank, universal))

    logger = MetricsLogger(rank=env.rank, mode=cfg.logging.mode, project=cfg.logging.project, entity=cfg.logging.entity,
                           run_name=cfg.logging.run_name, config=to_dict(cfg), tags=list(cfg.logging.tags),
                           run_id=resume_state.get("wandb_run_id") if resume_state else None, output_dir=cfg.output_dir)
    trainer.extra_state = {"wandb_run_id": logger.run_id, "world_size": env.world_size, "model_config": model_cfg.to_dict(),
                           "global_batch_size": sizes.global_batch_size, "data_path": cfg.data.path, "seq_len": cfg.data.seq_len}
    sources = sorted(manifest["splits"].get("val", {}).get("sources", {}))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else None

    def run_eval() -> dict:
        engine.eval()
        metrics = evaluate(engine, cfg.data.path, sources, cfg.data.seq_len, sizes.micro_batch_size, cfg.eval.batches,
                           env.rank, env.world_size)
        engine.train()
        return metrics

    stop_on_signal = StopOnSignal(signals, env.rank)
    trainer.callbacks = [
        stop_on_signal,  # first: the checkpoint callback below saves in the same step when it stops the run
        MetricsCallback(logger, cfg.logging.log_every, flops_per_token(model_cfg, cfg.data.seq_len),
                        peak_tflops(device, cfg.peak_tflops), env.world_size),
        EvalCallback(run_eval, logger, cfg.eval.every_steps if sources else 0),
        CheckpointCallback(cfg.checkpoint.dir, cfg.checkpoint.every_steps, cfg.checkpoint.keep_last, env.rank),
    ]
    completed = False
    try:
        trainer.fit()
        completed = True
    finally:
        if env.rank == 0 and logger.run_dir:
            run_dir = os.path.dirname(logger.run_dir)
            print(f"W&B run {logger.run_id} ({cfg.logging.mode}): {run_dir}"
                  + (f"\n  upload it with: wandb sync {run_dir}" if cfg.logging.mode == "offline" else ""), flush=True)
        logger.finish()
        if completed:
            # leave together, once rank 0 has closed the W&B run: a launcher that sees one rank exit
            # non-zero (75 after a stop signal) terminates the others
            torch.distributed.barrier()
        engine.destroy()
        torch.distributed.destroy_process_group()
    return stop_on_signal.exit_code(trainer)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(dict_cfg: DictConfig) -> None:
    try:
        exit_code = run(from_hydra(dict_cfg))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(exit_code)


if __name__ == "__main__":
    from pretrain.distributed import strip_local_rank_argument

    sys.argv = strip_local_rank_argument(sys.argv)
    main()
