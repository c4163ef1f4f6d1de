"""`python -m pretrain.train [hydra overrides]`: config → model, data, engine → Trainer.fit().

Launch it as one process, with `torchrun --nproc_per_node N`, with the `deepspeed` launcher, or
with `srun`: rank, world size and the rendezvous come from whichever launched it.
"""

from __future__ import annotations

import os
import random
import sys
import time

import hydra
from omegaconf import DictConfig

from pretrain.config import (ConfigError, TrainConfig, from_hydra, read_manifest, register_configs, to_dict, validate,
                             validate_against_manifest)
from shard_format.cli import CONF_DIR, check_overrides, exit_on_user_error

register_configs()


def run(cfg: TrainConfig) -> int:
    """Train; the process exit code: 0, or REQUEUE_EXIT_CODE when a stop signal ended the run early."""
    from pretrain.preemption import StopOnSignal, StopSignals, signal_margin_from_env

    signals = StopSignals().install()  # before anything slow: a signal during start-up must not kill us
    started = time.time()
    from pretrain.engine import quiet_deepspeed_start

    quiet_deepspeed_start()

    import numpy as np
    import torch

    from monitoring.dataset import manifest_sha256
    from monitoring.wandb_run import describe_run
    from pretrain import checkpoint, collectives, distributed, lineage, memory
    from pretrain.alerts import AlertsCallback
    from pretrain.callbacks import CheckpointCallback, EvalCallback, MetricsCallback, ProfileCallback
    from pretrain.data import build_train_batches
    from pretrain.device_batches import DeviceBatches
    from pretrain.engine import attention_backend, build_engine, build_model, deepspeed_config, init_distributed
    from pretrain.evaluate import evaluate, source_batches
    from pretrain.heartbeat import Heartbeat, heartbeat_interval
    from pretrain.metrics import MetricsLogger, peak_tflops
    from pretrain.model import flops_per_token
    from pretrain.trainer import NonFiniteLossError, Trainer

    env = distributed.detect()
    world = (cfg.memory.world_size or env.world_size) if cfg.estimate_only else env.world_size
    sizes = validate(cfg, world)  # every config error surfaces here, before any model is built
    planning = cfg.estimate_only and cfg.model.vocab_size is not None  # needs no data
    manifest = None if planning else read_manifest(cfg)
    model_cfg = cfg.model.with_vocab(manifest and validate_against_manifest(cfg, manifest)).validate()
    memory.check_before_start(model_cfg, cfg, world, sizes.micro_batch_size, env.local_rank, env.rank == 0)
    if cfg.estimate_only:
        return 0

    distributed.export_env(env)
    torch.set_num_threads(cfg.threads_per_rank)
    os.environ["OMP_NUM_THREADS"] = str(cfg.threads_per_rank)  # OpenMP in DeepSpeed's CPU Adam, if it loads
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)

    resume = checkpoint.resolve_resume(cfg.checkpoint.resume, cfg.checkpoint.dir)
    resume_state = checkpoint.read_state(resume) if resume else None
    data_sha256 = manifest_sha256(cfg.data.path)
    if resume_state is not None:  # before anything is built: other data is a config error
        changed = lineage.check_resume_data(cfg.data, data_sha256, resume_state, resume)
        if changed and env.rank == 0:
            print(changed, file=sys.stderr, flush=True)
    universal = resume_state is not None and resume_state["world_size"] != env.world_size
    if universal and resume_state["global_batch_size"] != sizes.global_batch_size:
        raise ConfigError(f"batch.global_batch_size: {sizes.global_batch_size}, but the checkpoint {resume} was trained "
                          f"with {resume_state['global_batch_size']}: keep it to resume on another number of ranks")

    if universal:  # before the rendezvous: no collective waits on the conversion
        checkpoint.ensure_universal(resume, env.rank, since=started)
    device = init_distributed(env, cfg.collective_timeout_minutes)
    ds_config = deepspeed_config(cfg, env.world_size, load_universal=universal)
    model = build_model(model_cfg, ds_config, cfg.seed, device)
    engine = build_engine(model, cfg, ds_config)
    if env.rank == 0:
        dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32
        print(f"device {engine.device}: attention kernel {attention_backend(model_cfg, cfg.data.seq_len, dtype, engine.device)}"
              f", optimizer {type(engine.basic_optimizer).__name__}, {cfg.threads_per_rank} CPU thread(s) per rank", flush=True)
    batches = DeviceBatches(build_train_batches(cfg.data, sizes.micro_batch_size, env.rank, env.world_size,
                                                sizes.global_batch_size, manifest=manifest), engine.device)
    trainer = Trainer(engine, batches, sizes.grad_accum_steps, cfg.max_steps, world_size=env.world_size,
                      log_every=cfg.logging.log_every)
    if resume:
        trainer.load_state_dict(checkpoint.load(engine, resume, env.rank, universal))
        if env.rank == 0:
            print(f"resumed from {resume} (step {trainer.step})", flush=True)

    logger = MetricsLogger(rank=env.rank, logging=cfg.logging, config=to_dict(cfg),
                           run_id=resume_state.get("wandb_run_id") if resume_state else None, output_dir=cfg.output_dir)
    restarts = resume_state.get("restarts", 0) + 1 if resume_state else 0  # resumed or requeued jobs
    trainer.extra_state = {"wandb_run_id": logger.run_id, "world_size": env.world_size, "model_config": model_cfg.to_dict(),
                           "global_batch_size": sizes.global_batch_size, "data_path": cfg.data.path, "seq_len": cfg.data.seq_len,
                           lineage.DATA_SHA256: data_sha256, "restarts": restarts}
    if resume_state and "val_loss" in resume_state:
        trainer.extra_state["val_loss"] = resume_state["val_loss"]
    if logger.run is not None:
        lineage.use_dataset(logger.run, cfg.data.path)
        logger.run.summary["restarts"] = restarts
    sources = sorted(manifest["splits"].get("val", {}).get("sources", {}))
    val_batches = source_batches(cfg.data.path, sources, cfg.data.seq_len, sizes.micro_batch_size, env.rank,
                                 env.world_size, manifest)

    def run_eval() -> dict:
        engine.eval()
        metrics = evaluate(engine, val_batches, cfg.eval.batches, engine.device)
        engine.train()
        return metrics

    checkpoints = CheckpointCallback(cfg.checkpoint.dir, cfg.checkpoint.every_steps, cfg.checkpoint.keep_last, env.rank,
                                     logger, lineage.CheckpointArtifacts(logger.run) if logger.run is not None else None)
    stop_on_signal = StopOnSignal(signals, env.rank, signal_margin_from_env(), lambda: checkpoints.last_save_s)
    heartbeat = Heartbeat(os.path.join(cfg.output_dir, "heartbeats"), env.rank, heartbeat_interval(cfg.collective_timeout_minutes))
    metrics = MetricsCallback(logger, cfg.logging.log_every, flops_per_token(model_cfg, cfg.data.seq_len),
                              peak_tflops(torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                                          cfg.peak_tflops), env.world_size, constants={"run/restarts": restarts})
    alerts = AlertsCallback(logger, cfg.alerts, metrics, stop_on_signal, checkpoints)
    trainer.callbacks = [
        stop_on_signal,  # first: the checkpoint callback below saves in the same step when it stops the run
        metrics,
        EvalCallback(run_eval, logger, cfg.eval.every_steps if sources else 0),
        checkpoints,
        alerts,  # after the metrics and checkpoints: it reads what they did
        heartbeat,
    ] + ([ProfileCallback(cfg.profile_step, os.path.join(cfg.output_dir, "profile"), env.rank)] if cfg.profile_step else [])
    completed = False
    try:
        trainer.fit()
        completed = True
    except NonFiniteLossError as exc:
        alerts.non_finite_loss(trainer.step, exc)
        raise
    except RuntimeError as exc:  # a collective that failed or timed out: say which rank fell silent
        print(heartbeat.failure_report(exc, trainer.step + 1, env.world_size), file=sys.stderr, flush=True)
        raise
    finally:
        heartbeat.stop()
        batches.close()
        if logger.run is not None:
            print(describe_run(logger.run, cfg.logging.mode), flush=True)
        logger.finish()
        if completed:
            # leave together, once rank 0 has closed the W&B run: a launcher that sees one rank exit
            # non-zero (75 after a stop signal) terminates the others
            collectives.barrier()
        engine.destroy()
        collectives.destroy()
    return stop_on_signal.exit_code(trainer)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exit_on_user_error
def main(dict_cfg: DictConfig) -> None:
    sys.exit(run(from_hydra(dict_cfg)))


if __name__ == "__main__":
    from pretrain.distributed import strip_local_rank_argument

    sys.argv = strip_local_rank_argument(sys.argv)
    exit_on_user_error(check_overrides)(CONF_DIR, "train", sys.argv[1:])
    main()
