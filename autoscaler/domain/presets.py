"""Named bundles of typed PromQL queries for the serving stacks users run.

A preset is a bundle: each entry says what its query measures (a `SignalKind`) and
every query returns a single series, so the Prometheus adapter's "exactly one series"
rule holds. `{selector}` is a validated label-matcher list from metadata; `{window}`
is the rate window. Every sum over pods has a `pods` entry beside it that counts the
series summed, so a pod whose scrape is missing reads as missing data rather than as
lower demand.

Where an engine renamed a metric between releases, the query reads both names series
by series (`new or old`), so a fleet in the middle of a rolling upgrade still sums each
pod once; where the labels changed with the name, it takes the newest name's aggregate
when that has data. docs/presets.md lists each preset's signals and where every name
was checked.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from autoscaler.domain.errors import SpecError
from autoscaler.domain.signals import SignalKind, SignalQuery

Signal = tuple[SignalKind, str]
"""One entry of a bundle: what the query measures and its PromQL template."""


@dataclass(frozen=True, slots=True)
class Preset:
    """A bundle of typed queries for one serving engine.

    The first signal is the one the preset is named after (for the names older than
    bundles, the query they used to expand to); a `pods` signal is never first.
    """

    name: str
    description: str
    engine: str
    checked_against: str
    """The engine's source release (tag or commit) whose metric definitions the names match."""
    signals: tuple[Signal, ...]

    def __post_init__(self) -> None:
        kinds = Counter(kind for kind, _ in self.signals)
        repeated = sorted(kind.value for kind, count in kinds.items() if count > 1)
        if repeated:
            raise ValueError(f"preset {self.name}: more than one query of kind {', '.join(repeated)}")
        if SignalKind.PODS not in kinds:
            raise ValueError(f"preset {self.name}: has no pods query beside its sums")
        if not self.signals or self.signals[0][0] is SignalKind.PODS:
            raise ValueError(f"preset {self.name}: the first query must measure demand, not count pods")


# ---- template pieces: `{{{selector}}}` becomes `{<selector>}` when expanded ------------


def _selected(metric: str) -> str:
    return metric + "{{{selector}}}"


def _either(new: str, old: str) -> str:
    """A metric renamed between releases: each series under its new name, else its old one."""
    return "(" + _selected(new) + " or " + _selected(old) + ")"


def _rate(metric: str) -> str:
    return "rate(" + _selected(metric) + "[{window}])"


def _sum_rate(metric: str) -> str:
    return "sum(" + _rate(metric) + ")"


def _sum(metric: str) -> str:
    return "sum(" + _selected(metric) + ")"


def _count(metric: str) -> str:
    return "count(" + _selected(metric) + ")"


# ---- vLLM (v1 engine) -----------------------------------------------------------------

_VLLM_RELEASE = "vllm-project/vllm vllm/v1/metrics/loggers.py at commits 005a810b and a6f0308c"
_VLLM_COMPLETIONS: Signal = (SignalKind.COMPLETIONS, _sum_rate("vllm:request_success_total"))
_VLLM_WAITING: Signal = (SignalKind.WAITING, _sum("vllm:num_requests_waiting"))
_VLLM_RUNNING: Signal = (SignalKind.RUNNING, _sum("vllm:num_requests_running"))
_VLLM_PODS: Signal = (SignalKind.PODS, _count("vllm:num_requests_running"))
_VLLM_KV_CACHE = _either("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_VLLM_TOKENS = _sum_rate("vllm:prompt_tokens_total") + " + " + _sum_rate("vllm:generation_tokens_total")


def _vllm(name: str, description: str, first: Signal) -> Preset:
    """A request bundle: completions, waiting and running, so demand follows by conservation."""
    rest = tuple(signal for signal in (_VLLM_COMPLETIONS, _VLLM_WAITING, _VLLM_RUNNING) if signal != first)
    return Preset(name, description, "vLLM", _VLLM_RELEASE, (first, *rest, _VLLM_PODS))


# ---- SGLang ---------------------------------------------------------------------------

_SGLANG_RELEASE = "sgl-project/sglang python/sglang/srt/metrics/collector.py at commit 00ae9c15"
_SGLANG_PODS: Signal = (SignalKind.PODS, _count("sglang:num_running_reqs"))

# ---- Text Generation Inference --------------------------------------------------------

_TGI_RELEASE = "huggingface/text-generation-inference v3.3.7 (router/src/server.rs, backends/v3/src)"
_TGI_WAITING: Signal = (SignalKind.WAITING, _sum("tgi_queue_size"))
_TGI_PODS: Signal = (SignalKind.PODS, _count("tgi_queue_size"))

# ---- Triton Inference Server ----------------------------------------------------------

_TRITON_RELEASE = "triton-inference-server/server v2.71.0 (docs/user_guide/metrics.md)"
_TRITON_COMPLETIONS: Signal = (SignalKind.COMPLETIONS, _sum_rate("nv_inference_request_success"))
_TRITON_WAITING: Signal = (SignalKind.WAITING, _sum("nv_inference_pending_request_count"))
_TRITON_PODS: Signal = (SignalKind.PODS, _count("nv_inference_pending_request_count"))

# ---- DCGM exporter --------------------------------------------------------------------

_DCGM_RELEASE = "NVIDIA/dcgm-exporter 4.5.3-4.8.2 (etc/default-counters.csv)"
_DCGM_FB_USED = (
    "avg("
    + _selected("DCGM_FI_DEV_FB_USED")
    + " / ("
    + _selected("DCGM_FI_DEV_FB_USED")
    + " + "
    + _selected("DCGM_FI_DEV_FB_FREE")
    + "))"
)

# ---- Gateway API Inference Extension endpoint picker, and llm-d's router ---------------

_POOL_RELEASE = (
    "kubernetes-sigs/gateway-api-inference-extension v1.5.0 and v1.0.2, llm-d/llm-d-router v0.10.0 (pkg/epp/metrics)"
)


def _per_pool(expression: str) -> str:
    """One value per InferencePool, whichever endpoint-picker replicas report it."""
    return "max by (name) (" + expression + ")"


# llm-d's router exports its llm_d_epp_* names beside the older ones, with the same pool
# labels, so the gauges are read series by series. Its request counter has one more
# label (fairness_id), so the counters are read whole: the newest name that has data.
_POOL_ARRIVALS: Signal = (
    SignalKind.ARRIVALS,
    _sum_rate("llm_d_epp_request_total")
    + " or sum("
    + _rate("inference_objective_request_total")
    + " or "
    + _rate("inference_model_request_total")
    + ")",
)
_POOL_READY = _either("llm_d_epp_ready_endpoints", "inference_pool_ready_pods")
_POOL_WAITING: Signal = (
    SignalKind.WAITING,
    "sum("
    + _per_pool(_either("llm_d_epp_average_queue_size", "inference_pool_average_queue_size") + " * " + _POOL_READY)
    + ")",
)
_POOL_KV_CACHE = _either("llm_d_epp_average_kv_cache_utilization", "inference_pool_average_kv_cache_utilization")
_POOL_PODS: Signal = (SignalKind.PODS, "sum(" + _per_pool(_POOL_READY) + ")")

# ---- NVIDIA Dynamo frontend -----------------------------------------------------------

_DYNAMO_RELEASE = (
    "ai-dynamo/dynamo lib/llm/src/http/service/metrics.rs at commit 0014908a, "
    "lib/runtime/src/metrics/prometheus_names.rs at commit 04070c75"
)
_DYNAMO_ACTIVE = _either("dynamo_frontend_active_requests", "dynamo_frontend_inflight_requests")


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        _vllm(
            "vllm",
            "vLLM requests: completed per second, waiting and running, summed over pods.",
            _VLLM_COMPLETIONS,
        ),
        _vllm(
            "vllm-waiting",
            "vLLM requests waiting in the scheduler queue, with completions and running beside them.",
            _VLLM_WAITING,
        ),
        _vllm(
            "vllm-running",
            "vLLM requests in flight on the GPUs, with completions and waiting beside them.",
            _VLLM_RUNNING,
        ),
        _vllm(
            "vllm-request-rate",
            "vLLM completed requests per second, with waiting and running beside them (as preset vllm).",
            _VLLM_COMPLETIONS,
        ),
        Preset(
            "vllm-token-rate",
            "vLLM prompt plus generated tokens processed per second, summed over pods.",
            "vLLM",
            _VLLM_RELEASE,
            ((SignalKind.COMPLETIONS, _VLLM_TOKENS), _VLLM_PODS),
        ),
        Preset(
            "vllm-kv-cache",
            "vLLM KV-cache usage (0-1), averaged over engines; the older name gpu_cache_usage_perc is read too.",
            "vLLM",
            _VLLM_RELEASE,
            ((SignalKind.UTILIZATION, "avg" + _VLLM_KV_CACHE), (SignalKind.PODS, "count" + _VLLM_KV_CACHE)),
        ),
        Preset(
            "sglang",
            "SGLang requests: finished per second, queued and running, summed over pods.",
            "SGLang",
            _SGLANG_RELEASE,
            (
                (SignalKind.COMPLETIONS, _sum_rate("sglang:num_requests_total")),
                (SignalKind.WAITING, _sum("sglang:num_queue_reqs")),
                (SignalKind.RUNNING, _sum("sglang:num_running_reqs")),
                _SGLANG_PODS,
            ),
        ),
        Preset(
            "sglang-token-usage",
            "SGLang KV-cache token pool usage (0-1), averaged over pods.",
            "SGLang",
            _SGLANG_RELEASE,
            ((SignalKind.UTILIZATION, "avg(" + _selected("sglang:token_usage") + ")"), _SGLANG_PODS),
        ),
        Preset(
            "tgi-queue",
            "Text Generation Inference requests queued, with successes per second and the batch size.",
            "TGI",
            _TGI_RELEASE,
            (
                _TGI_WAITING,
                (SignalKind.COMPLETIONS, _sum_rate("tgi_request_success")),
                (SignalKind.RUNNING, _sum("tgi_batch_current_size")),
                _TGI_PODS,
            ),
        ),
        Preset(
            "tgi-request-rate",
            "Text Generation Inference requests received per second, with the queue beside them.",
            "TGI",
            _TGI_RELEASE,
            ((SignalKind.ARRIVALS, _sum_rate("tgi_request_count")), _TGI_WAITING, _TGI_PODS),
        ),
        Preset(
            "triton-queue",
            "Triton Inference Server pending requests, with successes per second beside them.",
            "Triton",
            _TRITON_RELEASE,
            (_TRITON_WAITING, _TRITON_COMPLETIONS, _TRITON_PODS),
        ),
        Preset(
            "triton-request-rate",
            "Triton Inference Server successful requests per second, with pending requests beside them.",
            "Triton",
            _TRITON_RELEASE,
            (_TRITON_COMPLETIONS, _TRITON_WAITING, _TRITON_PODS),
        ),
        Preset(
            "dcgm-fb-used",
            "NVIDIA DCGM framebuffer memory used / (used + free), averaged over GPUs.",
            "DCGM exporter",
            _DCGM_RELEASE,
            ((SignalKind.UTILIZATION, _DCGM_FB_USED), (SignalKind.PODS, _count("DCGM_FI_DEV_FB_USED"))),
        ),
        Preset(
            "inference-pool",
            "Endpoint picker (Gateway API Inference Extension, llm-d router): requests routed per second and the"
            " pool's queued requests (average queue x ready pods).",
            "Gateway API Inference Extension / llm-d endpoint picker",
            _POOL_RELEASE,
            (_POOL_ARRIVALS, _POOL_WAITING, _POOL_PODS),
        ),
        Preset(
            "inference-pool-kv-cache",
            "Endpoint picker (Gateway API Inference Extension, llm-d router): the pool's average KV-cache utilisation.",
            "Gateway API Inference Extension / llm-d endpoint picker",
            _POOL_RELEASE,
            (
                (SignalKind.UTILIZATION, "avg(" + _per_pool(_POOL_KV_CACHE) + ")"),
                _POOL_PODS,
            ),
        ),
        Preset(
            "dynamo",
            "NVIDIA Dynamo frontend: requests finished per second, queued before their first token,"
            " and past it, summed over frontends.",
            "NVIDIA Dynamo",
            _DYNAMO_RELEASE,
            (
                (SignalKind.COMPLETIONS, _sum_rate("dynamo_frontend_requests_total")),
                (SignalKind.WAITING, _sum("dynamo_frontend_queued_requests")),
                (SignalKind.RUNNING, "sum" + _DYNAMO_ACTIVE + " - " + _sum("dynamo_frontend_queued_requests")),
                (SignalKind.PODS, _count("dynamo_frontend_queued_requests")),
            ),
        ),
    )
}

_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\\n]|\\.)*"\s*'
_SELECTOR = re.compile(rf"^(?:{_MATCHER}(?:,{_MATCHER})*)?,?$")


def validate_selector(selector: str, *, key: str = "presetSelector") -> str:
    """Accept only PromQL label matchers, so metadata cannot inject other PromQL."""
    if len(selector) > 1024:
        raise SpecError(key, "longer than 1024 characters")
    if not _SELECTOR.fullmatch(selector):
        raise SpecError(key, 'must be PromQL label matchers, for example: namespace="llm",model_name="m"')
    return selector.strip()


def rate_window_seconds(step_seconds: float) -> int:
    """A rate window that spans several scrapes at common intervals (15-60 s)."""
    return int(max(120.0, 2.0 * step_seconds))


def expand_preset(name: str, selector: str, step_seconds: float) -> tuple[SignalQuery, ...]:
    """The preset's queries with `selector` (already validated) and the rate window inserted."""
    window = f"{rate_window_seconds(step_seconds)}s"
    return tuple(
        SignalQuery(kind, template.format(selector=selector, window=window)) for kind, template in PRESETS[name].signals
    )
