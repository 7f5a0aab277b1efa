"""Named PromQL recipes for the serving stacks users run.

Each preset expands to one PromQL expression that returns a single series, so the
Prometheus adapter's "exactly one series" rule holds. `{selector}` is a validated
label-matcher list from metadata; `{window}` is the rate window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autoscaler.domain.errors import SpecError
from autoscaler.domain.types import MetricKind


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    template: str
    kind: MetricKind
    unit: str
    description: str


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "vllm-waiting",
            "sum(vllm:num_requests_waiting{{{selector}}})",
            MetricKind.LOAD,
            "requests",
            "vLLM requests waiting in the scheduler queue (queue depth), summed over pods.",
        ),
        Preset(
            "vllm-running",
            "sum(vllm:num_requests_running{{{selector}}})",
            MetricKind.LOAD,
            "requests",
            "vLLM requests in flight on the GPUs, summed over pods.",
        ),
        Preset(
            "vllm-request-rate",
            "sum(rate(vllm:request_success_total{{{selector}}}[{window}]))",
            MetricKind.LOAD,
            "requests/s",
            "vLLM completed requests per second, summed over pods.",
        ),
        Preset(
            "vllm-token-rate",
            "sum(rate(vllm:prompt_tokens_total{{{selector}}}[{window}]))"
            " + sum(rate(vllm:generation_tokens_total{{{selector}}}[{window}]))",
            MetricKind.LOAD,
            "tokens/s",
            "vLLM prompt plus generated tokens per second, summed over pods.",
        ),
        Preset(
            "vllm-kv-cache",
            "avg(vllm:gpu_cache_usage_perc{{{selector}}})",
            MetricKind.UTILISATION,
            "fraction",
            "vLLM KV-cache usage (0-1), averaged over pods.",
        ),
        Preset(
            "tgi-queue",
            "sum(tgi_queue_size{{{selector}}})",
            MetricKind.LOAD,
            "requests",
            "Text Generation Inference requests waiting in the queue, summed over pods.",
        ),
        Preset(
            "tgi-request-rate",
            "sum(rate(tgi_request_count{{{selector}}}[{window}]))",
            MetricKind.LOAD,
            "requests/s",
            "Text Generation Inference requests per second, summed over pods.",
        ),
        Preset(
            "triton-queue",
            "sum(nv_inference_pending_request_count{{{selector}}})",
            MetricKind.LOAD,
            "requests",
            "Triton Inference Server pending requests, summed over models and pods.",
        ),
        Preset(
            "triton-request-rate",
            "sum(rate(nv_inference_request_success{{{selector}}}[{window}]))",
            MetricKind.LOAD,
            "requests/s",
            "Triton Inference Server successful inferences per second.",
        ),
        Preset(
            "dcgm-fb-used",
            "avg(DCGM_FI_DEV_FB_USED{{{selector}}}"
            " / (DCGM_FI_DEV_FB_USED{{{selector}}} + DCGM_FI_DEV_FB_FREE{{{selector}}}))",
            MetricKind.UTILISATION,
            "fraction",
            "NVIDIA DCGM framebuffer memory used / (used + free), averaged over GPUs.",
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


def expand_preset(name: str, selector: str, step_seconds: float) -> str:
    preset = PRESETS[name]
    window = f"{rate_window_seconds(step_seconds)}s"
    return preset.template.format(selector=selector, window=window)
