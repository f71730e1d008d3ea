"""The training loop around `train_step`: setup, data order, logging, checkpoints, final save.

`train(config)` builds the parts once (policy, frozen reference, samplers, rewards, optimizer),
then runs steps. Data order is a seeded permutation per epoch, so the step number alone fixes
the data position and a resumed run sees the same batches. An exception or Ctrl-C mid-run
saves the last completed step as a checkpoint before it propagates, so no work is lost.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from aapo.algorithms import get_advantage, get_algorithm
from aapo.config import config_to_dict
from aapo.data.datasets import load_problems
from aapo.data.prompts import (
    build_messages,
    encode_prompt,
    resolve_system_prompt,
    resolve_user_template,
)
from aapo.metrics import JsonlSink, MetricSink, TensorBoardSink, WandbSink
from aapo.models import load_model, load_tokenizer
from aapo.rewards import configure_default_grader, get_reward_function, reward_parameters
from aapo.rollout import HFSampler
from aapo.training import checkpoint as ckpt
from aapo.training.config import TrainConfig
from aapo.training.evaluate import held_out_accuracy
from aapo.training.reference import AdapterDisabledSampler, frozen_copy
from aapo.training.scoring import RewardScorer, reward_name
from aapo.training.step import StepParts, train_step

log = logging.getLogger("aapo")
PROGRESS_KEYS = {
    "reward": "reward",
    "rewards/accuracy/mean": "acc",
    "loss": "loss",
    "completions/mean_length": "len",
    "ref_reward": "ref",
}


def apply_algorithm_defaults(config: TrainConfig) -> TrainConfig:
    """An algorithm's defaults (e.g. DAPO's epsilon_high) fill options the user left unset."""
    algorithm = get_algorithm(config.algorithm)
    pristine = TrainConfig()
    changes = {
        k: v for k, v in algorithm.defaults.items() if getattr(config, k) == getattr(pristine, k)
    }
    return replace(config, **changes) if changes else config


def prepare_rows(rows: list[dict], tokenizer: Any, config: TrainConfig) -> tuple[list[dict], int]:
    """Attach prompt token ids; drop (and count) prompts longer than max_prompt_length."""
    system = resolve_system_prompt(config.system_prompt)
    template = resolve_user_template(config.prompt_template)
    kept, skipped = [], 0
    for row in rows:
        ids = encode_prompt(tokenizer, build_messages(row["problem"], system, template))
        if len(ids) > config.max_prompt_length:
            skipped += 1
            continue
        kept.append({**row, "_prompt_ids": ids})
    if skipped:
        log.warning(
            "skipped %d prompts longer than max_prompt_length=%d tokens",
            skipped,
            config.max_prompt_length,
        )
    if not kept:
        raise ValueError(
            f"every prompt is longer than max_prompt_length={config.max_prompt_length}"
        )
    return kept, skipped


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        for module in config.imports:  # user plug-ins register themselves on import
            importlib.import_module(module)
        self.config = config = apply_algorithm_defaults(config)
        self.accelerator = acc = Accelerator()
        set_seed(config.seed + acc.process_index)  # distinct sampling streams per process
        self.output_dir = Path(config.output_dir)
        self.algorithm = get_algorithm(config.algorithm)
        self.advantage_name = config.advantage_estimator or self.algorithm.advantage
        needs_reference = get_advantage(self.advantage_name).needs_reference

        self.tokenizer = load_tokenizer(config.model_name_or_path)
        model = load_model(config.model_name_or_path, config.dtype, acc.device)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        reference_model = None
        if config.use_peft:
            model = _with_lora(model, config)  # the reference is the same model, adapters off
        elif needs_reference or config.beta > 0:
            reference_model = frozen_copy(model)
        self.reference_model = reference_model

        per_process = config.per_device_train_batch_size * config.gradient_accumulation_steps
        if per_process % config.num_generations:
            raise ValueError(
                "per_device_train_batch_size × gradient_accumulation_steps = "
                f"{per_process} must be "
                f"a multiple of num_generations = {config.num_generations}, so every group is "
                "sampled and scored whole on one process"
            )
        self.prompts_per_process = per_process // config.num_generations
        self.prompts_per_step = self.prompts_per_process * acc.num_processes

        rows = load_problems(
            config.dataset_name, config.dataset_split, config.seed, config.dataset_size
        )
        self.rows, self.skipped_prompts = prepare_rows(rows, self.tokenizer, config)
        self.steps_per_epoch = len(self.rows) // self.prompts_per_step
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.rows)} usable prompts is fewer than one step's {self.prompts_per_step}"
            )
        self.total_steps = (
            config.max_steps
            if config.max_steps > 0
            else math.ceil(config.num_train_epochs * self.steps_per_epoch)
        )

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
        )
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.scheduler = _scheduler(config, self.optimizer, self.total_steps)

        policy = acc.unwrap_model(self.model)
        self.policy_sampler = HFSampler(policy, self.tokenizer)
        reference_sampler = None
        if needs_reference:
            reference_sampler = (
                AdapterDisabledSampler(self.policy_sampler, policy)
                if config.use_peft
                else HFSampler(reference_model, self.tokenizer)
            )
        # a grading batch must give up before the scorer abandons the reward call around it
        configure_default_grader(batch_timeout=max(1.0, 0.8 * config.reward_timeout))
        names = [reward_name(spec) for spec in config.reward_funcs]
        functions = [
            get_reward_function(spec, **_reward_params(spec, config))
            for spec in config.reward_funcs
        ]
        self.parts = StepParts(
            config=config,
            algorithm=self.algorithm,
            advantage_name=self.advantage_name,
            model=self.model,
            policy_sampler=self.policy_sampler,
            reference_sampler=reference_sampler,
            reference_model=reference_model if config.beta > 0 else None,
            scorer=RewardScorer(names, functions, config.reward_weights, config.reward_timeout),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            accelerator=acc,
            pad_id=self.policy_sampler.pad_id,
            advantage_options=_advantage_options(config),
        )

    # data order: a permutation per epoch, seeded; the step number fixes the position
    def batch_rows(self, step: int) -> list[dict]:
        epoch, index = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        order = torch.randperm(len(self.rows), generator=generator).tolist()
        start = (
            index * self.prompts_per_step
            + self.accelerator.process_index * self.prompts_per_process
        )
        return [self.rows[i] for i in order[start : start + self.prompts_per_process]]

    def train(self) -> dict[str, Any]:
        cfg, acc = self.config, self.accelerator
        start_step = 0
        if cfg.resume_from_checkpoint:
            path = ckpt.resolve_resume(self.output_dir, cfg.resume_from_checkpoint)
            start_step = ckpt.load_checkpoint(
                path, acc.unwrap_model(self.model), self.optimizer, self.scheduler, acc
            )["step"]
            log.info("resumed from %s at step %d", path, start_step)
        sinks = self._sinks(resume_step=start_step if cfg.resume_from_checkpoint else None)
        summary: dict[str, Any] = {"skipped_prompts": self.skipped_prompts}
        if cfg.eval_num_problems and start_step == 0:
            summary["held_out_accuracy_before"] = self._held_out()
        last: dict[str, float] = {}
        step = start_step
        bar = tqdm(
            total=self.total_steps,
            initial=start_step,
            desc=f"{cfg.algorithm}",
            disable=not acc.is_main_process,
        )
        try:
            while step < self.total_steps:
                rng = ckpt.rng_state()  # state at the start of the step, for a crash checkpoint
                last = train_step(self.parts, self.batch_rows(step))
                step += 1
                if step % cfg.logging_steps == 0 or step == self.total_steps:
                    last["epoch"] = step / self.steps_per_epoch
                    for sink in sinks:
                        sink.write(step, last)
                bar.update(1)
                bar.set_postfix(
                    {short: f"{last[k]:.3f}" for k, short in PROGRESS_KEYS.items() if k in last}
                )
                if cfg.save_steps and step % cfg.save_steps == 0 and step < self.total_steps:
                    self._save(step, ckpt.rng_state())
        except BaseException:
            if step > start_step:  # keep the last completed step
                log.error("training stopped at step %d; saving checkpoint-%d first", step + 1, step)
                self._save(step, rng)
            raise
        finally:
            bar.close()
            for sink in sinks:
                sink.close()
        if cfg.eval_num_problems:
            summary["held_out_accuracy_after"] = self._held_out()
        summary.update(final_metrics=last, steps=step)
        self._save_final(summary)
        return summary

    def _held_out(self) -> float:
        rows = (
            load_problems("synthetic", "test", self.config.seed)
            if self.config.dataset_name == "synthetic"
            else None
        )
        if rows is None:
            log.warning(
                "eval_num_problems is set but the held-out check only knows the synthetic task"
            )
            return float("nan")
        rows, _ = prepare_rows(rows[: self.config.eval_num_problems], self.tokenizer, self.config)
        accuracy = held_out_accuracy(
            self.policy_sampler,
            rows,
            self.config.eval_max_new_tokens or self.config.max_completion_length,
        )
        if self.accelerator.is_main_process:
            log.info("held-out accuracy (greedy, %d problems): %.3f", len(rows), accuracy)
        return accuracy

    def _save(self, step: int, rng: dict[str, Any]) -> None:
        acc = self.accelerator
        ckpt.save_checkpoint(
            self.output_dir,
            step,
            acc.unwrap_model(self.model),
            self.optimizer,
            self.scheduler,
            rng,
            acc,
        )
        if acc.is_main_process:
            ckpt.rotate(self.output_dir, self.config.save_total_limit)

    def _save_final(self, summary: dict[str, Any]) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return
        model = acc.unwrap_model(self.model)
        model.save_pretrained(self.output_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(self.output_dir)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(self.output_dir)
        _write_model_card(self.output_dir, self.config, summary)

    def _sinks(self, resume_step: int | None) -> list[MetricSink]:
        if not self.accelerator.is_main_process:
            return []
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.yaml").write_text(
            yaml.safe_dump(config_to_dict(self.config), sort_keys=False), encoding="utf-8"
        )
        sinks: list[MetricSink] = [JsonlSink(self.output_dir / "metrics.jsonl", resume_step)]
        if "tensorboard" in self.config.report_to:
            sinks.append(TensorBoardSink(self.output_dir / "tensorboard"))
        if "wandb" in self.config.report_to:
            sinks.append(WandbSink(config_to_dict(self.config), self.output_dir))
        return sinks


def train(config: TrainConfig) -> dict[str, Any]:
    """Train with `config`; return a summary (held-out accuracy before/after, final metrics)."""
    started = time.perf_counter()
    summary = Trainer(config).train()
    summary["seconds"] = time.perf_counter() - started
    return summary


def _advantage_options(config: TrainConfig) -> dict[str, Any]:
    keys = ("scale_rewards", "delta_low", "delta_high", "momentum_clip", "gpg_norm", "gpg_alpha")
    return {k: getattr(config, k) for k in keys}


def _reward_params(spec: str, config: TrainConfig) -> dict[str, Any]:
    """The user's parameters; a length-aware reward's cap defaults to max_completion_length."""
    params = dict(config.reward_kwargs.get(spec, {}))
    if "max_length" in reward_parameters(spec) and "max_length" not in params:
        params["max_length"] = config.max_completion_length
    return params


def _scheduler(config: TrainConfig, optimizer: Any, total_steps: int) -> Any:
    from transformers import get_scheduler

    return get_scheduler(
        config.lr_scheduler_type,
        optimizer,
        num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
        scheduler_specific_kwargs=config.lr_scheduler_kwargs or None,
    )


def _with_lora(model: Any, config: TrainConfig) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("use_peft needs peft: pip install aapo[peft]") from err
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _write_model_card(output_dir: Path, config: TrainConfig, summary: dict[str, Any]) -> None:
    metrics = {
        k: v for k, v in summary.get("final_metrics", {}).items() if not k.startswith("time/")
    }
    lines = [
        "---",
        "library_name: transformers",
        "tags: [aapo, reinforcement-learning, " + config.algorithm + "]",
        "---",
        "",
        f"# {output_dir.name}",
        "",
        f"Trained with aapo ({config.algorithm}) from `{config.model_name_or_path}` "
        f"on `{config.dataset_name}` "
        f"for {summary.get('steps')} steps.",
        "",
    ]
    for key in ("held_out_accuracy_before", "held_out_accuracy_after"):
        if key in summary:
            lines.append(f"- {key.replace('_', ' ')}: {summary[key]:.3f}")
    lines += [
        "",
        "## Final metrics",
        "",
        "```yaml",
        yaml.safe_dump(metrics, sort_keys=True).strip(),
        "```",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(config_to_dict(config), sort_keys=False).strip(),
        "```",
        "",
    ]
    (output_dir / "README.md").write_text("\n".join(lines), encoding="utf-8")
