"""The model card (`README.md`) written beside a trained model: what, from where, how it went."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aapo.config import config_to_dict
from aapo.training.config import TrainConfig


def write_model_card(
    output_dir: Path, config: TrainConfig, summary: dict[str, Any], name: str | None = None
) -> None:
    """`output_dir/README.md`, titled `name` (default: the folder's name)."""
    metrics = {
        k: v for k, v in summary.get("final_metrics", {}).items() if not k.startswith("time/")
    }
    lines = [
        "---",
        "library_name: transformers",
        "tags: [aapo, reinforcement-learning, " + config.algorithm + "]",
        "---",
        "",
        f"# {name or output_dir.name}",
        "",
        f"Trained with aapo ({config.algorithm}) from `{config.model_name_or_path}` "
        f"on `{config.dataset_name}` for {summary.get('steps')} steps.",
        "",
    ]
    for key in ("held_out_accuracy_before", "held_out_accuracy_after"):
        if key in summary:
            lines.append(f"- {key.replace('_', ' ')}: {summary[key]:.3f}")
    if "reference_source" in summary:
        lines.append(f"- reference rewards (AAPO): {summary['reference_source']}")
    lines += ["", "## Final metrics", "", "```yaml", _yaml(metrics, sort=True), "```", ""]
    lines += ["## Config", "", "```yaml", _yaml(config_to_dict(config), sort=False), "```", ""]
    (output_dir / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _yaml(data: dict[str, Any], sort: bool) -> str:
    return yaml.safe_dump(data, sort_keys=sort).strip()
