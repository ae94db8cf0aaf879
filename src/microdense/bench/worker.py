"""Measure one model in a process of its own, so each peak-memory reading is that model's alone.

Run as `python -m microdense.bench.worker '<json options>'`; prints one JSON object on its last line.
A spec is `name` or `name:key=value:...`: keys `channels_last`, `compile`, `amp` (bf16 or fp16
autocast), `grad_checkpointing` (the model's `set_grad_checkpointing()`) and `retain_memory` (false: the C library's
own allocator policy, see `microdense.allocator`) are run options, any other key is a model kwarg (e.g.
`microdensenet_cifar_base:memory_efficient=true`).
"""
import json
import os
import re
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
import yaml

from microdense.allocator import retain_freed_memory
from microdense.bench.machine import sync as _sync
from microdense.errors import ConfigError
from microdense.layers.fused import fused_kernels
from microdense.provenance import onednn_verbose

RUN_OPTIONS = ("channels_last", "compile", "amp", "grad_checkpointing", "backend", "retain_memory")
# NOTE: eager measures training and inference; the others serve inference only (img/s and batch-1 latency).
BACKENDS = ("eager", "compile", "onnxruntime")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parse_spec(spec: str) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """'name:key=value:...' -> (name, model kwargs, run options)."""
    name, *pairs = spec.split(":")
    model_kwargs, options = {}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"bad model option {pair!r} in {spec!r}; use name:key=value")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"bad model option {pair!r} in {spec!r}: {value!r} is not a YAML value") from None
        (options if key in RUN_OPTIONS else model_kwargs)[key] = parsed
    return name, model_kwargs, options


def check_spec(spec: str) -> None:
    """Refuse a spec that cannot be measured, before any benchmark starts: unknown model, malformed or
    ill-typed option, or model kwargs the model refuses (it is built once here, on the CPU)."""
    from microdense.models import create_model
    name, model_kwargs, options = parse_spec(spec)
    for key in ("channels_last", "compile", "grad_checkpointing", "retain_memory"):
        if key in options and not isinstance(options[key], bool):
            raise ConfigError(f"{spec!r}: {key}={options[key]!r} must be true or false")
    if "amp" in options and options["amp"] not in AMP_DTYPES:
        raise ConfigError(f"{spec!r}: amp={options['amp']!r}; choose one of {', '.join(AMP_DTYPES)}")
    if options.get("backend", "eager") not in BACKENDS:
        raise ConfigError(f"{spec!r}: backend={options['backend']!r}; choose one of {', '.join(BACKENDS)}")
    create_model(name, **model_kwargs)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _timed(fn, steps: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return time.perf_counter() - start


def measure(spec: str, batch_size: int, steps: int, warmup: int, device: str, latency_runs: int,
            kernels: bool = False, profile: bool = False,
            after: Optional[Callable[..., Dict[str, Any]]] = None) -> Dict[str, Any]:
    """The size, training and inference speed and peak memory of one spec's model. `after`: a further leg, called as
    `after(model, batch_size, steps, warmup, device, run_options, train_img_s)` once the bare step is measured (a
    worker of its own passes it); the figures it returns join the result."""
    import microdense  # noqa: F401  (registers the models)
    from microdense.models.size import count_flops_by_module, count_params
    from microdense.models import create_model, resolve_input_size

    dev = torch.device(device)
    name, model_kwargs, options = parse_spec(spec)
    # NOTE: as every `microdense` command does (microdense.allocator), unless the spec says retain_memory=false
    retained = options.get("retain_memory", True) and retain_freed_memory()
    model = create_model(name, **model_kwargs).to(dev)
    input_size = resolve_input_size(model)
    num_classes = max(1, getattr(model, "num_classes", 10))
    fmt = torch.channels_last if options.get("channels_last") else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if options.get("grad_checkpointing"):
        model.set_grad_checkpointing(True)
    step_model = torch.compile(model) if options.get("compile") else model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_size, generator=g).to(dev).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    amp = options.get("amp")
    if amp is not None and amp not in AMP_DTYPES:
        raise ConfigError(f"amp={amp!r}: choose bf16 or fp16")

    def autocast():
        return torch.autocast(dev.type, dtype=AMP_DTYPES[amp]) if amp else nullcontext()

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(step_model(x), y)
        loss.backward()
        opt.step()

    def infer(batch: torch.Tensor) -> torch.Tensor:
        with autocast():
            return step_model(batch)

    backend = options.get("backend", "eager")
    if backend != "eager":
        return _measure_inference_backend(spec, model, backend, x, steps, warmup, latency_runs, dev)

    # training first, so the process's peak memory is the training step's
    model.train()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rss_before = _rss_mb()
    for _ in range(warmup):
        train_step()
    train_s = _timed(train_step, steps, dev)
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before

    model.eval()
    infer_img_s, latency_ms = _time_inference(infer, x, steps, warmup, latency_runs, dev)
    flops = count_flops_by_module(model, input_size)[""]
    train_img_s = steps * batch_size / train_s
    result = {
        "model": spec, "params": count_params(model), "macs": flops // 2, "input_size": list(input_size),
        "batch_size": batch_size, "train_img_s": train_img_s, "infer_img_s": infer_img_s,
        "latency_ms": latency_ms, "peak_mem_mb": peak_mb, "retain_memory": retained,
        "fused_kernels": fused_kernels() is not None,
        # NOTE: a training step costs ~3 forward passes (forward, and backward for inputs and for weights).
        "train_flops": 3 * flops * train_img_s,
    }
    model.train()
    if kernels and dev.type == "cpu":
        result["kernels"] = conv_kernels(onednn_verbose(train_step))
    if profile:
        result["profile"] = profile_step(train_step, steps)
    if after is not None:
        result.update(after(model, batch_size, steps, warmup, dev, options, train_img_s))
    return result


# torch profiler operators -> the part of a training step each is (self time; the rest is "other")
PROFILE_GROUPS = (
    ("conv forward", ("aten::mkldnn_convolution", "aten::convolution", "aten::_convolution", "aten::conv2d")),
    ("conv backward", ("aten::convolution_backward",)),
    ("BN forward", ("aten::native_batch_norm", "aten::_native_batch_norm_legit", "aten::batch_norm")),
    ("BN backward", ("aten::native_batch_norm_backward",)),
    ("ReLU forward", ("aten::relu", "aten::relu_", "aten::clamp_min", "aten::clamp_min_")),
    ("ReLU backward", ("aten::threshold_backward",)),
    ("cat", ("aten::cat",)),
    # microdense.layers.fused: a consumer's BN scale, shift and ReLU over its concatenation, one pass each way
    ("fused BN-ReLU forward", ("_ScaleShiftReLU",)),
    ("fused BN-ReLU backward", ("_ScaleShiftReLUBackward",)),
    ("copies", ("aten::copy_", "aten::clone", "aten::_to_copy")),
)


def profile_step(train_step: Callable[[], None], steps: int) -> Dict[str, Any]:
    """Where a training step's time goes: `torch.profiler` over `steps` steps, operators' self time summed into
    `PROFILE_GROUPS` (milliseconds per step and shares), and the heaviest operators by name."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            train_step()
    ops = {e.key: e.self_cpu_time_total / 1e3 / steps for e in prof.key_averages()}
    total = sum(ops.values()) or 1.0
    group_of = {op: name for name, members in PROFILE_GROUPS for op in members}
    groups: Dict[str, float] = {}
    for op, ms in ops.items():
        groups[group_of.get(op, "other")] = groups.get(group_of.get(op, "other"), 0.0) + ms
    return {"step_ms": round(total, 2),
            "groups": {k: dict(ms=round(v, 2), share=round(v / total, 4)) for k, v in
                       sorted(groups.items(), key=lambda kv: -kv[1])},
            "top_ops": [dict(op=op, ms=round(ms, 2), share=round(ms / total, 4))
                        for op, ms in sorted(ops.items(), key=lambda kv: -kv[1])[:12]]}


def conv_kernels(verbose_lines: List[str]) -> List[Dict[str, Any]]:
    """oneDNN's convolution kernels in a training step, from its verbose lines: per (implementation, propagation,
    grouped or not), the calls and milliseconds, most time first."""
    totals: Dict[Tuple[str, str, bool], List[float]] = {}
    for line in verbose_lines:
        f = line.split(",")
        if len(f) < 9 or f[3] != "exec" or f[5] != "convolution":
            continue
        groups = re.match(r"g(\d+)", f[-2])
        key = (f[6], f[7], bool(groups) and int(groups.group(1)) > 1)
        calls_ms = totals.setdefault(key, [0, 0.0])
        calls_ms[0] += 1
        calls_ms[1] += float(f[-1])
    return [dict(impl=impl, prop=prop, grouped=grouped, calls=int(calls), ms=round(ms, 3))
            for (impl, prop, grouped), (calls, ms) in sorted(totals.items(), key=lambda kv: -kv[1][1])]


def _measure_inference_backend(spec: str, model: torch.nn.Module, backend: str, x: torch.Tensor, steps: int,
                               warmup: int, latency_runs: int, dev: torch.device) -> Dict[str, Any]:
    """Inference img/s and batch-1 latency of `model` served by torch.compile or ONNX Runtime (no training)."""
    import tempfile

    from microdense.models.size import count_flops_by_module, count_params
    from microdense.models import resolve_input_size

    model.eval()
    input_size = resolve_input_size(model)
    if backend == "onnxruntime":
        from microdense.deploy.export import DEFAULT_OPSET, export_onnx
        from microdense.deploy.fold import fold_batchnorm
        if dev.type != "cpu":
            raise ConfigError("backend=onnxruntime is measured on the CPU only; use --device cpu")
        folded, _ = fold_batchnorm(model)
        tmp = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False)
        tmp.close()
        with torch.no_grad():
            forward = export_onnx(folded, x[:1].contiguous(), tmp.name, DEFAULT_OPSET, True, {})
        os.unlink(tmp.name)  # the session holds the graph in memory
    else:
        forward = torch.compile(model)
    infer_img_s, latency_ms = _time_inference(forward, x, steps, warmup, latency_runs, dev)
    flops = count_flops_by_module(model, input_size)[""]
    return {
        "model": spec, "params": count_params(model), "macs": flops // 2, "input_size": list(input_size),
        "batch_size": len(x), "train_img_s": None, "infer_img_s": infer_img_s,
        "latency_ms": latency_ms, "peak_mem_mb": None, "train_flops": None,
    }


def _time_inference(forward: Callable[[torch.Tensor], Any], x: torch.Tensor, steps: int, warmup: int,
                    latency_runs: int, dev: torch.device) -> Tuple[float, float]:
    """(images/s at the batch of `x`, median batch-1 latency in ms), each after its own warm-up."""
    with torch.no_grad():
        for _ in range(warmup):
            forward(x)
        infer_s = _timed(lambda: forward(x), steps, dev)
        one = x[:1].clone()
        for _ in range(warmup):
            forward(one)
        times = [_timed(lambda: forward(one), 1, dev) for _ in range(latency_runs)]
    return steps * len(x) / infer_s, statistics.median(times) * 1e3


def main(measure_one: Callable[..., Dict[str, Any]] = measure) -> int:
    """Print the measurement (`measure_one` of the options in argv[1]) as one JSON line; a failure as one JSON line
    {"error": ...} and exit status 1 (the traceback goes to stderr, for a person, never for the parent to parse)."""
    opts = json.loads(sys.argv[1])
    try:
        result = measure_one(**opts)
    except Exception as e:  # any failure, reported in words to the parent process
        import traceback
        traceback.print_exc()
        print(json.dumps({"error": f"{type(e).__name__}: {e}".splitlines()[0]}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
