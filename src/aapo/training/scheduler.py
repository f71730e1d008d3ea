"""The learning-rate scheduler: checked before any model loads, then built.

transformers' `get_scheduler` treats `lr_scheduler_kwargs` unevenly: `constant` and
`constant_with_warmup` drop them silently, the others pass them on and fail with a TypeError
when the scheduler is built, after the weights have loaded. `check_scheduler` reads what each
scheduler takes from its function's signature instead (less what aapo sets itself), refuses
schedulers that step on a metric (aapo steps once per optimizer step, with no metric), and
dry-runs the schedule on a stand-in optimizer with the run's learning rate, so a value the
function rejects or a learning rate that turns negative or non-finite is found while the
config is checked. The dry run covers `max_steps` steps, or `STAND_IN_STEPS` when the run's
length follows from the dataset (read later): the schedule's shape scales with the length,
what it accepts does not.

Left out: schedulers other than transformers' named ones.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

# arguments aapo passes itself (from warmup_ratio and the run's length), or a resume restores
OWN_ARGUMENTS = frozenset({"optimizer", "num_warmup_steps", "num_training_steps", "last_epoch"})
_PROBED_STEPS = 64  # schedule points the dry run evaluates, spread over the run
STAND_IN_STEPS = 100


def scheduler_names() -> list[str]:
    from transformers.trainer_utils import SchedulerType

    return [kind.value for kind in SchedulerType]


def scheduler_options(name: str) -> tuple[set[str], set[str]]:
    """(options `lr_scheduler_kwargs` may set, the ones among them it must set) for the
    scheduler `name`, read from its function's signature."""
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION
    from transformers.trainer_utils import SchedulerType

    parameters = inspect.signature(TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)]).parameters
    options = {
        k for k, p in parameters.items() if k not in OWN_ARGUMENTS and p.kind != p.VAR_KEYWORD
    }
    required = {k for k in options if parameters[k].default is inspect.Parameter.empty}
    return options, required


def build_scheduler(
    name: str, kwargs: dict[str, Any], optimizer: Any, warmup_ratio: float, total_steps: int
) -> Any:
    from transformers import get_scheduler

    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=math.ceil(warmup_ratio * total_steps),
        num_training_steps=total_steps,
        scheduler_specific_kwargs=kwargs or None,
    )


def check_scheduler(
    name: str,
    kwargs: dict[str, Any],
    learning_rate: float,
    warmup_ratio: float,
    total_steps: int | None,
) -> None:
    """Refuse (ValueError) what `build_scheduler` or the run would trip on (module doc);
    `total_steps` None: not known yet (a stand-in length is dry-run)."""
    allowed = scheduler_names()
    if name not in allowed:
        raise ValueError(f"lr_scheduler_type must be one of {allowed}, got {name!r}")
    options, required = scheduler_options(name)
    own = sorted(set(kwargs) & OWN_ARGUMENTS)
    if own:
        raise ValueError(
            f"lr_scheduler_kwargs sets {own}, which aapo sets itself (warmup_ratio, the run's "
            "steps, resume)"
        )
    unknown = sorted(set(kwargs) - options)
    if unknown:
        takes = f"it takes {sorted(options)}" if options else "it takes none"
        raise ValueError(
            f"lr_scheduler_kwargs {unknown} are not options of lr_scheduler_type {name!r} ({takes})"
        )
    missing = sorted(required - set(kwargs))
    if missing:
        raise ValueError(f"lr_scheduler_type {name!r} needs lr_scheduler_kwargs {missing}")
    _dry_run(name, kwargs, learning_rate, warmup_ratio, total_steps or STAND_IN_STEPS)


def _dry_run(
    name: str, kwargs: dict[str, Any], learning_rate: float, warmup_ratio: float, total_steps: int
) -> None:
    import torch

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=learning_rate)
    where = f"lr_scheduler_type {name!r} with lr_scheduler_kwargs {kwargs}"
    try:
        scheduler = build_scheduler(name, kwargs, optimizer, warmup_ratio, total_steps)
        needs = [
            p for p in list(inspect.signature(scheduler.step).parameters.values())
            if p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD
        ]  # fmt: skip
        if needs:
            raise ValueError(
                f"steps on a metric ({needs[0].name}); aapo steps the scheduler once per "
                "optimizer step without one"
            )
        lambdas = getattr(scheduler, "lr_lambdas", [])
        stride = max(1, total_steps // _PROBED_STEPS)
        steps = sorted({*range(0, total_steps + 1, stride), total_steps})
        for step in steps:
            for factor in lambdas:
                value = factor(step)
                if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                    raise ValueError(
                        f"makes the learning rate {value!r} x learning_rate at step {step} of "
                        f"{total_steps}; it must stay finite and >= 0"
                    )
    except (TypeError, ValueError, ArithmeticError) as err:
        raise ValueError(f"{where}: {err}{_text_numbers_hint(kwargs)}") from err


def _text_numbers_hint(kwargs: dict[str, Any]) -> str:
    """YAML 1.1 reads `1e-6` (no dot) as text; say so when a value is such a text."""
    texts = []
    for key, value in kwargs.items():
        try:
            if isinstance(value, str):
                float(value)
                texts.append(key)
        except ValueError:
            pass
    if not texts:
        return ""
    return f" ({texts} arrived as text: YAML reads 1e-6 as text, write 1.0e-6)"
