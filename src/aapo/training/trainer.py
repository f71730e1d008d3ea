"""The training loop around `train_round`: assembly, data order, logging, checkpoints, saving.

`Trainer(config)` assembles the parts from the named builders in `builders.py`; samplers and
reward functions can be passed in instead (tests inject crafted ones). `train()` runs
generation batches until `total_steps` optimizer steps are taken. Prompts come from a seeded
permutation per epoch (`data.rows.epoch_order`) read at a cursor that checkpoints store, so a
resumed run sees the same batches. Checkpoints are taken between generation batches; an
exception or Ctrl-C mid-run saves the last completed one, with the RNG state and cursor as
they were right after it, before it propagates, so no work is lost. The final model is staged
and moved into place file by file (`files.move_into_place`); when that fails, a checkpoint of
the final step is saved (or the last one kept) and the error names it.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from aapo.algorithms import get_advantage, get_algorithm
from aapo.config import ConfigError, config_to_dict
from aapo.data.datasets import held_out_problems
from aapo.data.rows import PromptRow, epoch_order
from aapo.files import move_into_place
from aapo.metrics import JsonlSink, MetricSink, TensorBoardSink, WandbSink
from aapo.models import (
    inspect_model,
    load_tokenizer,
    precision_plan,
    save_pretrained_as,
    training_device,
)
from aapo.rewards.scoring import RewardScorer
from aapo.rollout import Sampler
from aapo.training import builders, deepspeed_engine, preflight, run_dir, scored
from aapo.training import checkpoint as ckpt
from aapo.training.config import TrainConfig
from aapo.training.distributed import gather_lists
from aapo.training.evaluate import held_out_metrics
from aapo.training.model_card import write_model_card
from aapo.training.reference import Reference
from aapo.training.step import StepOutput, StepParts, train_round

log = logging.getLogger("aapo")
FINAL_STAGING = "final.tmp"  # the final save's files, before they move into output_dir
PROGRESS_KEYS = {
    "reward": "reward",
    "rewards/accuracy/mean": "acc",
    "loss": "loss",
    "completions/mean_length": "len",
    "ref_reward": "ref",
}


@dataclass(frozen=True)
class Resume:
    """The checkpoint a run resumes from, checked before any model loads."""

    path: Path
    state: dict[str, Any]  # its trainer_state.json, every field checked
    same_settings: bool  # written with this run's settings: its position is checked too


class Trainer:
    """A run's parts, built once; `train()` runs the steps."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        policy_sampler: Sampler | None = None,
        reference_sampler: Sampler | None = None,
        reward_functions: Mapping[str, Callable[..., list]] | None = None,
    ) -> None:
        from accelerate.utils import set_seed

        self.config = config = builders.prepare_config(config)
        # fp32 master weights under bf16/fp16 autocast, saved in the dtype asked for
        self.precision = precision_plan(config.dtype, training_device())
        self.accelerator = acc = builders.build_accelerator(self.precision)
        self.deepspeed = deepspeed_engine.active(acc)
        if self.deepspeed:
            deepspeed_engine.check_options(config)
        set_seed(config.seed + acc.process_index)  # distinct sampling streams per process
        self.output_dir = Path(config.output_dir)
        self.last_checkpoint: Path | None = None  # the newest checkpoint of this run's steps
        self.cursor = 0  # prompts drawn so far, over every process
        self.completions: JsonlSink | None = None  # completions.jsonl, with log_completions
        self.algorithm = get_algorithm(config.algorithm)
        estimator = get_advantage(config.advantage_estimator or self.algorithm.advantage)
        self.layout = config.batch_layout(acc.num_processes)
        # output_dir is this run's alone (held until train() ends), before any model loads
        self._lock = run_dir.claim(
            self.output_dir,
            "aapo train",
            acc,
            lambda: run_dir.check_fresh(
                self.output_dir, config.resume_from_checkpoint, config.overwrite_output_dir
            ),
        )
        try:
            # a resume's checkpoint is checked before any model loads (its position: after data)
            self.resume_from = self._check_resume() if config.resume_from_checkpoint else None
            scorer = builders.build_scorer(config, reward_functions)  # before any model loads
            try:
                self._build(config, estimator, scorer, policy_sampler, reference_sampler)
            except BaseException:
                scorer.close()  # its worker processes must not outlive a failed setup
                raise
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let go of output_dir (train() does when it ends; idempotent)."""
        if self._lock is not None:
            self._lock.release()

    def _build(
        self,
        config: TrainConfig,
        estimator: Any,
        scorer: RewardScorer,
        policy_sampler: Sampler | None,
        reference_sampler: Sampler | None,
    ) -> None:
        acc = self.accelerator
        model_path = self._check_before_loading(config, scorer)
        model = builders.build_policy(config, model_path, self.precision.param_dtype, acc.device)
        source = builders.reference_source(config, estimator)
        cache = (  # fingerprinted with the initial weights: before any update
            builders.open_reference_cache(config, model, self.data, self.tokenizer, scorer.names)
            if source == "cached"
            else None
        )
        self.reference_model = builders.build_frozen_model(config, model, source == "sampled")
        if self.deepspeed:  # DeepSpeed is sized before it wraps the model
            deepspeed_engine.configure(acc, config)
        self.model, self.optimizer = acc.prepare(model, builders.build_optimizer(config, model))
        if self.reference_model is not None:  # autocast like the policy; no DDP, no optimizer
            self.reference_model = acc.prepare_model(self.reference_model, evaluation_mode=True)
        self.scheduler = builders.build_scheduler(config, self.optimizer, self.total_steps)

        policy = acc.unwrap_model(self.model)
        self.policy_sampler = policy_sampler or builders.build_policy_sampler(
            config, policy, self.tokenizer, model_path, acc
        )
        reference = builders.build_reference(
            source,
            scorer,
            cache,
            sampler=lambda: (
                reference_sampler
                or builders.build_reference_sampler(
                    config,
                    self.policy_sampler,
                    policy,
                    self.reference_model,
                    self.tokenizer,
                    model_path,
                    acc,
                )
            ),
        )
        self.parts = self._step_parts(config, estimator, scorer, reference, policy)

    def _step_parts(
        self,
        config: TrainConfig,
        estimator: Any,
        scorer: RewardScorer,
        reference: Reference | None,
        policy: Any,
    ) -> StepParts:
        """What every step reads, from the parts built above and the settings built once."""
        acc = self.accelerator
        return StepParts(
            config=config,
            model=self.model,
            policy_sampler=self.policy_sampler,
            reference=reference,
            reference_logprobs=builders.build_reference_logprobs(
                config, policy, self.reference_model
            ),
            scorer=scorer,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            accelerator=deepspeed_engine.DeepSpeedSteps(acc) if self.deepspeed else acc,
            pad_id=self.tokenizer.pad_token_id,
            sync_weights=builders.build_engine_sync(
                config, self.policy_sampler, self.model, self.scheduler, acc
            ),
            sampling=builders.sampling_params(config),
            estimator=estimator.name,
            loss=builders.loss_settings(config, self.algorithm),
            advantage_options=builders.advantage_options(config, estimator),
        )

    def _check_before_loading(self, config: TrainConfig, scorer: RewardScorer) -> str:
        """Everything that can be refused before the weights load (the model's config.json,
        the engine's options, the prompts against the context, each reward once on real rows,
        the output disk, a resume's position); loads the tokenizer and data; → the model path."""
        acc = self.accelerator
        with acc.main_process_first():  # smollm2-135m converts once, not once per process
            self.model_info = inspect_model(config.model_name_or_path)  # config.json only
        model_path = self.model_info.path
        if config.sampler == "vllm":  # what the engine cannot do is refused before any load
            from aapo.training.rollout_engine import check_vllm_options

            check_vllm_options(config, model_path, acc.device.type)
        self.tokenizer = load_tokenizer(model_path)
        self.data = builders.build_data(config, self.tokenizer, self.layout)
        preflight.check_context(config, self.data, self.model_info)
        scored.probe(scorer, self.rows, self.tokenizer)  # each reward once, on real rows
        preflight.check_output_dir(
            config, self.model_info, self.data.total_steps, self.precision.save_dtype
        )
        if self.resume_from is not None:  # its settings' layout, when they are this run's
            layout = self.layout if self.resume_from.same_settings else None
            refills = config.max_sampling_rounds if config.informative_target() > 0 else 1
            path, state = self.resume_from.path, self.resume_from.state
            ckpt.check_position(path, state, self.total_steps, layout, refills)
        return model_path

    @property
    def rows(self) -> list[PromptRow]:
        return self.data.rows

    @property
    def total_steps(self) -> int:
        return self.data.total_steps

    def draw_rows(self) -> list[PromptRow]:
        """This process's share of the next generation batch's prompts; advances the data
        cursor (prompts consumed by every process, which a checkpoint stores)."""
        count, per_epoch = self.layout.generation_prompts, self.data.epoch_prompts(self.layout)
        epoch, offset = divmod(self.cursor, per_epoch)
        order = epoch_order(len(self.rows), self.config.seed, epoch)
        share = self.layout.generation_prompts_per_process
        start = offset + self.accelerator.process_index * share
        self.cursor += count
        return [replace(self.rows[i], epoch=epoch) for i in order[start : start + share]]

    def train(self) -> dict[str, Any]:
        """Run the steps and save the final model; output_dir is let go of however it ends."""
        try:
            return self._train()
        finally:
            self.close()

    def _train(self) -> dict[str, Any]:
        cfg = self.config
        start_step = self._resume() if cfg.resume_from_checkpoint else 0
        if cfg.overwrite_output_dir and self.accelerator.is_main_process:
            replaced = run_dir.clear(self.output_dir)
            if replaced:
                log.warning("overwrite_output_dir: deleted the previous run's %s", replaced)
        sinks = self._sinks(resume_step=start_step if cfg.resume_from_checkpoint else None)
        summary: dict[str, Any] = {"skipped_prompts": self.data.skipped_prompts}
        provenance = self.parts.reference and self.parts.reference.provenance()
        if provenance:  # not sampled by aapo from these weights
            summary["reference_source"] = provenance
        if start_step == 0:
            before = self._checks_at_start(sinks)
            if before is not None:
                summary["held_out_accuracy_before"] = before
        bar = tqdm(
            total=self.total_steps,
            initial=start_step,
            desc=cfg.algorithm,
            disable=not self.accelerator.is_main_process,
        )
        try:
            step, last = self._run_steps(start_step, sinks, bar)
            end = ckpt.rng_state(), self.cursor  # what a checkpoint of the final step holds
            after = self._check_at_end(sinks, step, last)
        finally:
            bar.close()
            for sink in [*sinks, *([self.completions] if self.completions else [])]:
                sink.close()
            self.parts.scorer.close()  # reward workers end with the run, hung or not
        if after is not None:
            summary["held_out_accuracy_after"] = after
        if cfg.final_eval_problems():
            summary["held_out_problems"] = cfg.final_eval_problems()
        summary.update(final_metrics=last, steps=step)
        self._save_final(summary, step, *end)
        return summary

    def _run_steps(
        self, start_step: int, sinks: list[MetricSink], bar: Any
    ) -> tuple[int, dict[str, float]]:
        """Generation batches until total_steps optimizer steps; checkpoints between them."""
        cfg = self.config
        last: dict[str, float] = {}
        step = boundary = start_step
        rng, cursor = ckpt.rng_state(), self.cursor  # as right after the last whole batch
        try:
            while step < self.total_steps:
                for output in train_round(self.parts, self.draw_rows(), self.draw_rows):
                    step, last = step + 1, output.metrics
                    self._log_step(step, output, sinks, bar)
                    if step == self.total_steps:
                        break
                boundary, rng, cursor = step, ckpt.rng_state(), self.cursor
                if cfg.save_steps and step % cfg.save_steps == 0 and step < self.total_steps:
                    self._save(step, rng, cursor)
        except BaseException:
            if boundary > start_step:  # keep the last completed generation batch
                log.error("training stopped at step %d; saving checkpoint-%d", step + 1, boundary)
                self._save(boundary, rng, cursor)
            raise
        return step, last

    def _log_step(self, step: int, output: StepOutput, sinks: list[MetricSink], bar: Any) -> None:
        metrics = output.metrics
        if self._eval_due(step):
            metrics.update(self._held_out(self.config.eval_num_problems))
        if step % self.config.logging_steps == 0 or step == self.total_steps:
            metrics["epoch"] = step / self.data.steps_per_epoch
            for sink in sinks:
                sink.write(step, metrics)
            if output.completions is not None and self.completions is not None:
                for row in output.completions:
                    self.completions.write(step, row)
        bar.update(1)
        bar.set_postfix(
            {short: f"{metrics[k]:.3f}" for k, short in PROGRESS_KEYS.items() if k in metrics}
        )

    def _resume(self) -> int:
        acc = self.accelerator
        assert self.resume_from is not None
        path = self.resume_from.path
        state = ckpt.load_checkpoint(
            path, acc.unwrap_model(self.model), self.optimizer, self.scheduler, acc
        )
        if self.scheduler.last_epoch != state["step"]:  # one scheduler step per optimizer step
            raise ckpt.CheckpointError(
                f"{path / ckpt.SCHEDULER}: field 'last_epoch' is {self.scheduler.last_epoch}, "
                f"but {path / ckpt.STATE} says step {state['step']}"
            )
        log.info("resumed from %s at step %d", path, state["step"])
        self.last_checkpoint = path
        self.cursor = state["data_cursor"]
        return state["step"]

    def _check_resume(self) -> Resume:
        """The checkpoint to resume: its state and files checked, and its settings this run's
        (or changed on purpose: `resume_config_changes`)."""
        path = ckpt.resolve_resume(self.output_dir, self.config.resume_from_checkpoint)
        state = ckpt.check_checkpoint(path, self.accelerator.num_processes)
        saved = state.get("config")
        if saved is None:
            raise ConfigError(f"--resume: {path} records no config; it predates this version")
        changed = ckpt.trajectory_config_differences(saved, config_to_dict(self.config))
        if not changed:
            return Resume(path, state, same_settings=True)
        listed = "; ".join(changed)
        if not self.config.resume_config_changes:
            raise ConfigError(
                f"--resume: {path} was written with other settings ({listed}); resume with "
                "the same settings, or pass --resume_config_changes true to continue anyway"
            )
        log.warning("resuming %s with changed settings: %s", path, listed)
        return Resume(path, state, same_settings=False)

    def _eval_due(self, step: int) -> bool:
        every = self.config.eval_steps
        return bool(self.config.eval_num_problems and every and step % every == 0)

    def _checks_at_start(self, sinks: list[MetricSink]) -> float | None:
        """Step 0 of the periodic check's curve and the accuracy before training, on the
        final check's problems (the same check when the two sizes agree)."""
        cfg = self.config
        final, periodic = cfg.final_eval_problems(), cfg.eval_num_problems
        metrics: dict[str, float] = {}
        if periodic and (cfg.eval_steps or final == periodic):
            metrics.update(self._held_out(periodic))  # the curve's starting point
        if final and final != periodic:
            metrics.update(self._final_check(final))
        for sink in sinks if metrics else []:
            sink.write(0, metrics)
        if not final:
            return None
        return metrics["eval/accuracy" if final == periodic else "eval_final/accuracy"]

    def _check_at_end(
        self, sinks: list[MetricSink], step: int, last: dict[str, float]
    ) -> float | None:
        """The accuracy after training: the last step's periodic check when it is the final
        one and just ran; else the final check, logged as eval_final/* at the last step."""
        cfg = self.config
        final = cfg.final_eval_problems()
        if not final:
            return None
        if final == cfg.eval_num_problems:
            return (last if "eval/accuracy" in last else self._held_out(final))["eval/accuracy"]
        metrics = self._final_check(final)
        for sink in sinks:
            sink.write(step, metrics)
        return metrics["eval_final/accuracy"]

    def _final_check(self, size: int) -> dict[str, float]:
        """The held-out check on `size` problems, named eval_final/* apart from the periodic
        check's eval/* (another number of problems, so another curve)."""
        return {f"eval_final/{k.removeprefix('eval/')}": v for k, v in self._held_out(size).items()}

    def _held_out(self, size: int) -> dict[str, float]:
        """Greedy accuracy on the first `size` problems of the synthetic held-out split."""
        cfg = self.config
        if cfg.dataset_name != "synthetic":
            log.warning(
                "a held-out check is asked for (eval_num_problems, eval_final_num_problems) but "
                "it only knows the synthetic task"
            )
            return {"eval/accuracy": float("nan")}
        rows = held_out_problems(cfg.seed, size, cfg.synthetic_levels)
        rows, _ = builders.encode_rows(rows, self.tokenizer, cfg)
        if self.parts.sync_weights is not None:  # an engine samples: give it the policy's weights
            self.parts.sync_weights()
        metrics = held_out_metrics(
            self.policy_sampler, rows, cfg.eval_max_new_tokens or cfg.max_completion_length
        )
        if self.accelerator.is_main_process:
            accuracy = metrics["eval/accuracy"]
            log.info("held-out accuracy (greedy, %d problems): %.3f", len(rows), accuracy)
        return metrics

    def _save(self, step: int, rng: dict[str, Any], cursor: int) -> Path | None:
        if self.deepspeed:  # reached only when a run fails: save_steps is refused at start
            log.error("no checkpoint under DeepSpeed (ZeRO partitions the optimizer state)")
            return None
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        path = ckpt.save_checkpoint(
            self.output_dir,
            step,
            model,
            self.optimizer,
            self.scheduler,
            rng,
            acc,
            extra={"data_cursor": cursor, "config": config_to_dict(self.config)},
        )
        if acc.is_main_process:
            ckpt.rotate(self.output_dir, self.config.save_total_limit, newest=path)
        self.last_checkpoint = path
        return path

    def _save_final(
        self, summary: dict[str, Any], step: int, rng: dict[str, Any], cursor: int
    ) -> None:
        """The model, tokenizer and card, staged in `final.tmp` and moved into output_dir,
        each file whole or not at all. When that fails (a full disk, Ctrl-C), a checkpoint of
        the final step is saved, or failing that too the last one is kept, and the error
        names it, so the trained steps can be resumed rather than lost."""
        acc = self.accelerator
        acc.wait_for_everyone()
        weights = ckpt.gathered_weights(self.model)  # FSDP: a collective; else None
        failure: BaseException | None = None
        if acc.is_main_process:
            try:
                self._write_final(weights, summary)
            except BaseException as err:
                failure = err
        if any(gather_lists(acc, [failure is not None])):
            self._keep_final_state(step, rng, cursor, failure)

    def _write_final(self, weights: dict[str, Any] | None, summary: dict[str, Any]) -> None:
        model = self.accelerator.unwrap_model(self.model)
        staging = self.output_dir / FINAL_STAGING
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
        staging.mkdir(parents=True)
        try:
            save_pretrained_as(model, staging, self.precision.save_dtype, weights)
            self.tokenizer.save_pretrained(staging)
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(staging)
            write_model_card(staging, self.config, summary, name=self.output_dir.name)
            move_into_place(staging, self.output_dir, last=("config.json", "adapter_config.json"))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _keep_final_state(
        self, step: int, rng: dict[str, Any], cursor: int, failure: BaseException | None
    ) -> None:
        """After a failed final save (on the main process; `failure` is None elsewhere):
        checkpoint the final step if possible, say which checkpoint holds the run, raise."""
        if failure is None:
            why = "it failed on the main process"
        elif ckpt.interrupted(failure):
            why = "interrupted"
        elif ckpt.disk_full(failure):
            why = "no space left on device"
        else:
            why = f"{type(failure).__name__}: {failure}"
        log.error("the final model could not be saved to %s (%s)", self.output_dir, why)
        try:
            self._save(step, rng, cursor)
        except Exception as err:  # a full disk stays full: keep the last checkpoint instead
            log.error("no checkpoint of step %d either (%s)", step, err)
        kept = self.last_checkpoint
        if kept is None:
            message = (
                f"the final model could not be saved to {self.output_dir} ({why}) and no "
                "checkpoint holds this run's steps: they are lost"
            )
        else:
            kept_step = ckpt.read_trainer_state(kept)["step"]
            message = (
                f"the final model could not be saved to {self.output_dir} ({why}); {kept} "
                f"holds step {kept_step} of {self.total_steps}: resume with --resume {kept}"
            )
        log.error(message)
        if failure is not None and ckpt.interrupted(failure):
            raise KeyboardInterrupt from None
        raise ckpt.CheckpointError(message) from failure

    def _sinks(self, resume_step: int | None) -> list[MetricSink]:
        if not self.accelerator.is_main_process:
            return []
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is None:  # a resumed run keeps the config it was started with
            (self.output_dir / "config.yaml").write_text(
                yaml.safe_dump(config_to_dict(self.config), sort_keys=False), encoding="utf-8"
            )
        sinks: list[MetricSink] = [JsonlSink(self.output_dir / "metrics.jsonl", resume_step)]
        if self.config.log_completions:  # one line per completion, same resume rule
            self.completions = JsonlSink(self.output_dir / "completions.jsonl", resume_step)
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
