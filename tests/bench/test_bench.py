"""The shape of `microdense bench` output on a tiny model (speed itself is never asserted)."""
import json

import pytest

from microdense.bench.worker import parse_spec
from microdense_cli import main


def test_parse_spec_separates_model_kwargs_and_run_options():
    assert parse_spec("m") == ("m", {}, {})
    assert parse_spec("m:memory_efficient=true:channels_last=1:group_width=4") == (
        "m", {"memory_efficient": True, "group_width": 4}, {"channels_last": 1})
    with pytest.raises(ValueError, match="use name:key=value"):
        parse_spec("m:oops")


@pytest.mark.slow
def test_bench_json_plot_and_table(tmp_path, capsys):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert main(["bench", "--models", "microdensenet_cifar_tiny,microdensenet_cifar_tiny:memory_efficient=true",
                 "--batch-size", "8", "--steps", "2", "--warmup", "1", "--latency-runs", "3", "--pipeline",
                 "--json", str(out), "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["matmul_fp32_flops"] > 0 and report["machine"]["device"] == "cpu"
    assert report["provenance"]["code"]["commit"] and report["provenance"]["machine"]["isa"]
    rows = report["results"]
    assert [r["model"] for r in rows] == ["microdensenet_cifar_tiny", "microdensenet_cifar_tiny:memory_efficient=true"]
    for r in rows:
        for key in ("model", "params", "macs", "train_img_s", "infer_img_s", "latency_ms", "peak_mem_mb",
                    "efficiency", "pipeline_img_s", "pipeline_overhead"):
            assert key in r, key
        assert r["params"] == 260_506 and r["macs"] == 43_452_288
        assert r["train_img_s"] > 0 and r["infer_img_s"] > 0 and r["latency_ms"] > 0 and r["peak_mem_mb"] > 0
        flops = report["machine"]["matmul_fp32_flops"]
        assert r["efficiency"] == pytest.approx(3 * 2 * r["macs"] * r["train_img_s"] / flops)
    assert png.read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    assert "microdensenet_cifar_tiny" in table and "efficiency" in table


def test_bench_unknown_model_is_refused_before_any_work(capsys):
    from microdense.bench.run import run_bench
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        run_bench(["nope"])


@pytest.mark.parametrize("spec, key", [("microdensenet_cifar_tiny:width_multiplier=abc", "width_multiplier"),
                                       ("densenet_bc100_k12_cifar:growth_rate=abc", "growth_rate")])
def test_a_knob_of_the_wrong_type_is_refused_in_one_line(spec, key, cli_here):
    proc = cli_here("bench", "--models", spec, "--steps", "1")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    model = spec.split(":")[0]
    assert lines[0].startswith(f"microdense: error: cannot build {model}: {key}='abc' is of the wrong type")
    assert lines[0].endswith(f"give {key} a value of the type it takes")


@pytest.mark.slow
def test_inference_backends_side_by_side(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--models", "microdensenet_cifar_tiny", "--backend", "eager,onnxruntime", "--batch-size",
                 "4", "--steps", "2", "--warmup", "1", "--latency-runs", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["model"] for r in rows] == ["microdensenet_cifar_tiny", "microdensenet_cifar_tiny:backend=onnxruntime"]
    eager, ort = rows
    assert eager["train_img_s"] > 0 and eager["efficiency"] > 0
    assert ort["train_img_s"] is None and ort["efficiency"] is None and ort["peak_mem_mb"] is None
    assert ort["infer_img_s"] > 0 and ort["latency_ms"] > 0 and ort["macs"] == eager["macs"]
    row = [line for line in capsys.readouterr().out.splitlines() if "backend=onnxruntime" in line][0]
    assert row.split("│")[3].strip() == "-"  # no training figure for an inference-only backend


def test_a_failing_worker_reports_its_error_and_its_traceback():
    from microdense.bench.run import bench_one
    # amp=fp8 passes parse_spec but not measure(): the worker itself must word the failure, and its traceback travels
    with pytest.raises(RuntimeError, match=r"benchmark of microdensenet_cifar_tiny:amp=fp8 failed: ConfigError: "
                                           r"amp='fp8'(.|\n)*Traceback"):
        bench_one("microdensenet_cifar_tiny:amp=fp8", 2, 1, 0, "cpu", 1, False)


def test_kernels_name_each_convolution_implementation_with_its_time():
    from microdense.bench.worker import conv_kernels, measure
    lines = [
        "onednn_verbose,v1,info,cpu,isa:Intel AVX2",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32 dst:f32,,,8x4x4x3x3,0.25",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32,,alg:convolution_direct,"
        "g8mb4_ic32oc32_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1,0.5",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32,,alg:convolution_direct,"
        "g8mb4_ic32oc32_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1,0.25",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_1x1:avx2,backward_data,src:f32,,"
        "alg:convolution_direct,"
        "mb4_ic32oc32_ih16oh16kh1sh1dh0ph0_iw16ow16kw1sw1dw0pw0,1.5",
    ]
    assert conv_kernels(lines) == [
        dict(impl="brgconv_1x1:avx2", prop="backward_data", grouped=False, calls=1, ms=1.5),
        dict(impl="jit:avx2", prop="forward_training", grouped=True, calls=2, ms=0.75)]
    result = measure("microdensenet_cifar_tiny:channels_last=true", batch_size=2, steps=1, warmup=0, device="cpu",
                     latency_runs=1, kernels=True)
    props = {k["prop"] for k in result["kernels"]}
    assert props == {"forward_training", "backward_data", "backward_weights"}
    assert any(k["grouped"] for k in result["kernels"]) and all(k["calls"] >= 1 for k in result["kernels"])


def test_profile_splits_a_step_into_its_parts():
    from microdense.bench.worker import measure
    result = measure("microdensenet_cifar_tiny:channels_last=true", batch_size=2, steps=2, warmup=0, device="cpu",
                     latency_runs=1, profile=True)
    p = result["profile"]
    assert p["step_ms"] > 0 and sum(g["ms"] for g in p["groups"].values()) == pytest.approx(p["step_ms"], rel=1e-3)
    from microdense.layers.fused import fused_kernels
    fused = {"fused BN-ReLU forward", "fused BN-ReLU backward"} if fused_kernels() is not None else set()
    assert {"conv forward", "conv backward", "BN forward", "BN backward", "ReLU backward", *fused} <= set(p["groups"])
    assert [o["ms"] for o in p["top_ops"]] == sorted((o["ms"] for o in p["top_ops"]), reverse=True)


def test_rounds_measure_every_model_round_robin_and_report_medians(monkeypatch):
    from microdense.bench import run as bench_run
    calls = []
    rates = iter([10.0, 50.0, 30.0, 70.0, 20.0, 60.0])  # a, b, a, b, a, b

    def fake_bench_one(spec, *args):
        calls.append(spec)
        rate = next(rates)
        return {"model": spec, "train_img_s": rate, "infer_img_s": rate, "latency_ms": 1.0, "peak_mem_mb": 5.0,
                "train_flops": 3.0 * rate, "kernels_or_profile": args[-2:]}

    monkeypatch.setattr(bench_run, "bench_one", fake_bench_one)
    monkeypatch.setattr(bench_run, "machine_info", lambda device: {"matmul_fp32_flops": 3.0})
    report = bench_run.run_bench(["resnet20_cifar", "microdensenet_cifar_tiny"], rounds=3, profile=True)
    assert calls == ["resnet20_cifar", "microdensenet_cifar_tiny"] * 3
    a, b = report["results"]
    assert a["train_img_s"] == 20.0 and a["train_img_s_by_round"] == [10.0, 30.0, 20.0] and a["rounds"] == 3
    assert b["train_img_s"] == 60.0 and b["efficiency"] == pytest.approx(60.0)
    assert a["kernels_or_profile"] == (False, True)  # profiled in the first round only
