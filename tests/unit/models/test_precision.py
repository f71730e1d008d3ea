"""Mixed precision as the field does it (ALGORITHMS.md §6): fp32 master weights, bf16/fp16 compute.

The demonstration on the bundled model is the reason for the plan: at lr 1e-6 one AdamW step
moves a weight by about 1e-6, below half a bf16 ulp of any weight larger than ~1e-4, so bf16
parameters keep their old values while fp32 master weights take the step.
"""

import pytest
import torch

from aapo.models import PrecisionPlan, load_model, precision_plan, save_pretrained_as


@pytest.mark.parametrize(
    ("dtype", "device", "plan"),
    [
        ("auto", "cpu", PrecisionPlan(torch.float32, "no", torch.float32)),
        ("auto", "cuda", PrecisionPlan(torch.float32, "bf16", torch.bfloat16)),
        ("auto", "cuda:1", PrecisionPlan(torch.float32, "bf16", torch.bfloat16)),
        ("float32", "cuda", PrecisionPlan(torch.float32, "no", torch.float32)),
        ("bfloat16", "cpu", PrecisionPlan(torch.float32, "bf16", torch.bfloat16)),
        ("bfloat16", "cuda", PrecisionPlan(torch.float32, "bf16", torch.bfloat16)),
        ("float16", "cuda", PrecisionPlan(torch.float32, "fp16", torch.float16)),
    ],
)
def test_plan_keeps_fp32_master_weights_and_saves_what_was_asked(dtype, device, plan):
    assert precision_plan(dtype, torch.device(device)) == plan


def test_plan_refuses_fp16_on_cpu_and_unknown_names():
    with pytest.raises(ValueError, match=r"float16 .* needs a GPU"):
        precision_plan("float16", "cpu")
    with pytest.raises(ValueError, match="dtype must be 'auto' or one of"):
        precision_plan("fp8", "cuda")


def _one_adamw_step(model, params_dtype: torch.dtype, autocast: bool) -> float:
    """Fraction of parameter values changed by one AdamW step at lr 1e-6 on a NLL loss."""
    model = model.to(params_dtype)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0)
    ids = torch.arange(3, 67).reshape(2, 32)  # [2, 32] ordinary tokens
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten()
    )
    loss.backward()
    optimizer.step()
    pairs = zip(model.parameters(), before, strict=True)
    changed = sum(int((p.detach() != b).sum()) for p, b in pairs)
    return changed / sum(b.numel() for b in before)


def test_fp32_master_weights_take_a_1e6_step_that_bf16_weights_round_away():
    plan = precision_plan("bfloat16", "cpu")
    master = _one_adamw_step(load_model("bundled", plan.param_dtype), plan.param_dtype, True)
    pure_bf16 = _one_adamw_step(load_model("bundled"), torch.bfloat16, True)
    assert master >= 0.90
    assert pure_bf16 < 0.10 and pure_bf16 < master / 10


def test_save_pretrained_as_writes_the_asked_dtype_and_leaves_the_model(tmp_path):
    from transformers import AutoModelForCausalLM

    model = load_model("bundled", torch.float32)
    save_pretrained_as(model, tmp_path, torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config.dtype == torch.float32
    saved = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto")
    assert {p.dtype for p in saved.parameters()} == {torch.bfloat16}
    for (name, ours), theirs in zip(model.named_parameters(), saved.parameters(), strict=True):
        assert torch.equal(ours.to(torch.bfloat16), theirs), name
    embed, head = saved.get_input_embeddings(), saved.get_output_embeddings()
    assert embed.weight.data_ptr() == head.weight.data_ptr()  # still tied


def test_save_pretrained_as_casts_lora_adapters(tmp_path):
    peft = pytest.importorskip("peft")
    from safetensors.torch import load_file

    model = peft.get_peft_model(load_model("bundled"), peft.LoraConfig(r=2, task_type="CAUSAL_LM"))
    save_pretrained_as(model, tmp_path, torch.bfloat16)
    adapters = load_file(tmp_path / "adapter_model.safetensors")
    assert adapters and {t.dtype for t in adapters.values()} == {torch.bfloat16}
