"""The `microdense` command line. It owns the terminal: library code never prints.

User errors (`UserError`) end as one line on stderr and a non-zero exit, never a traceback.
"""
import argparse
import json
import sys
from typing import List, Optional

from microdense.errors import UserError


def _fmt_count(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _console():
    """A rich console that does not squeeze tables to 80 columns when output is piped."""
    from rich.console import Console
    return Console(width=None if sys.stdout.isatty() else 160)


def cmd_models(args: argparse.Namespace) -> int:
    from microdense.models import list_models
    for name in list_models(args.pattern):
        print(name)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from microdense.bench.size import measure_size
    from microdense.models import create_model, resolve_input_size

    kwargs = {} if args.num_classes is None else dict(num_classes=args.num_classes)
    model = create_model(args.name, **kwargs)
    size = measure_size(args.name, model, resolve_input_size(model))
    if args.json:
        print(json.dumps(size.to_dict()))
        return 0
    console = _console()
    c, h, w = size.input_size
    console.print(f"[bold]{size.name}[/bold]: {_fmt_count(size.params)} parameters, "
                  f"{_fmt_count(size.macs)} MACs at {c}x{h}x{w}, {size.num_classes} classes", soft_wrap=True)
    table = Table(show_edge=False)
    for col in ("stage", "width", "blocks", "resolution", "params", "MACs"):
        table.add_column(col, justify="right")
    for i, st in enumerate(size.stages):
        table.add_row(str(i + 1), str(st.width), str(st.blocks), f"{h // st.reduction}x{w // st.reduction}",
                      _fmt_count(st.params), _fmt_count(st.macs))
    table.add_row("total", "", "", "", _fmt_count(size.params), _fmt_count(size.macs), style="bold")
    console.print(table)
    return 0


def _parse_set(items: List[str]) -> dict:
    import yaml
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set takes KEY=VALUE, got {item!r}", exit_code=2)
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from microdense.train.config import FIELDS, resolve_config
    from microdense.train.run import CONFIG_FILE, train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cli = {k: v for k, v in vars(args).items() if k in FIELDS and v is not None}
    extra = _parse_set(args.set)
    unknown = sorted(set(extra) - set(FIELDS))
    if unknown:
        raise UserError(f"--set names unknown field(s) {unknown}; fields are {', '.join(FIELDS)}", exit_code=2)
    cli = {**extra, **cli}
    config_file = args.config
    if args.resume and args.out and not config_file and (Path(args.out) / CONFIG_FILE).exists():
        config_file = str(Path(args.out) / CONFIG_FILE)  # continue the run as it was configured
    cfg = resolve_config(cli, config_file)
    result = train(cfg)
    if result.primary:  # one summary, from the global-rank-0 process
        top1 = "n/a" if result.val_top1 is None else f"{100 * result.val_top1:.2f}%"
        top5 = "n/a" if result.val_top5 is None else f"{100 * result.val_top5:.2f}%"
        rate = "n/a" if result.train_img_s is None else f"{result.train_img_s:.0f} img/s"
        print(f"done: {cfg.model} on {cfg.data}, {result.epochs} epochs / {result.steps} steps in "
              f"{result.seconds:.0f}s; val top-1 {top1}, top-5 {top5}; last epoch {rate}; run folder {result.run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from microdense.train.evaluate import evaluate

    result = evaluate(args.checkpoint, args.data, args.data_dir, args.val_split, args.batch_size, args.workers,
                      args.seed, args.plot, args.accelerator)
    if args.per_class:
        width = max(len(c) for c in result.per_class)
        for name, acc in result.per_class.items():
            print(f"{name:<{width}}  {100 * acc:6.2f}%")
    if args.plot:
        print(f"confusion matrix: {args.plot}")
    summary = dict(top1=result.top1, top5=result.top5, loss=result.loss, images=result.images)
    if args.json:
        if args.per_class:
            summary["per_class"] = result.per_class
        print(json.dumps(summary))
    else:
        print(f"top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%  loss {result.loss:.4f}  "
              f"images {result.images}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from microdense.bench.run import plot_bench, run_bench, write_json

    specs = [s for s in args.models.split(",") if s]
    if not specs:
        raise UserError("--models needs at least one model name", exit_code=2)
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("probing matmul rate", total=len(specs))

        def progress(done: int, spec: str) -> None:
            bar.update(task, completed=done, description=f"benchmarking {spec}")

        report = run_bench(specs, args.batch_size, args.steps, args.warmup, args.device, args.latency_runs,
                           args.pipeline, progress)
        bar.update(task, completed=len(specs), description="done")
    m = report["machine"]
    out = _console()
    out.print(f"{m.get('gpu', m['cpu'])}, {m['cores']} cores, torch {m['torch']} ({m['device']}, "
              f"{m['torch_threads']} threads); dense fp32 matmul {m['matmul_fp32_flops'] / 1e9:.1f} GFLOP/s; "
              f"batch {args.batch_size}", soft_wrap=True)
    table = Table(show_edge=False)
    cols = ["model", "params", "MACs", "train img/s", "infer img/s", "latency ms", "peak MB", "efficiency"]
    if args.pipeline:
        cols += ["pipeline img/s", "overhead"]
    for col in cols:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in report["results"]:
        row = [r["model"], _fmt_count(r["params"]), _fmt_count(r["macs"]), f"{r['train_img_s']:.1f}",
               f"{r['infer_img_s']:.1f}", f"{r['latency_ms']:.2f}", f"{r['peak_mem_mb']:.0f}", f"{r['efficiency']:.2f}"]
        if args.pipeline:
            row += [f"{r['pipeline_img_s']:.1f}", f"{100 * r['pipeline_overhead']:+.1f}%"]
        table.add_row(*row)
    out.print(table)
    if args.json:
        write_json(Path(args.json), report)
        out.print(f"wrote {args.json}")
    if args.plot:
        plot_bench(Path(args.plot), report)
        out.print(f"wrote {args.plot}")
    return 0


def _add_data_args(p: argparse.ArgumentParser, default_data: Optional[str]) -> None:
    p.add_argument("--data", choices=("synthetic", "cifar10", "cifar100", "imagefolder"), default=default_data,
                   help="dataset (default: synthetic)")
    p.add_argument("--data-dir", help="dataset folder (CIFAR root, or an ImageFolder tree)")
    p.add_argument("--val-split", type=float, help="hold out this stratified fraction of the training images")
    p.add_argument("--batch-size", type=int, help="images per device per step")
    p.add_argument("--workers", type=int, help="loader worker processes (large images)")
    p.add_argument("--seed", type=int, help="seed for data order, splits and initialisation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microdense", description="Micro-Dense Nets: models, training, benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list registered model names")
    p.add_argument("pattern", nargs="?", default="", help="wildcard filter, e.g. 'microdense*cifar*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="parameters, MACs and per-stage table of a model")
    p.add_argument("name", help="registered model name (see `microdense models`)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the model's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model (no flags: a short demo run on synthetic data)",
                       description="Every flag can also be set in a YAML file given with --config; flags win.")
    p.add_argument("--config", help="YAML file of training fields")
    p.add_argument("--model", help="registered model name (default microdensenet_cifar_tiny)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: from the data)")
    _add_data_args(p, None)
    p.add_argument("--download", action="store_true", default=None, help="download CIFAR if missing")
    p.add_argument("--recipe", choices=("paper", "fast", "imagenet", "darts"), help="training recipe (default fast)")
    p.add_argument("--genotype", help="DARTS-space models: DARTS_V1/DARTS_V2, a JSON file or text, or a "
                                      "Genotype(...) string")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--out", help="run folder (default runs/<model>-<data>-<time>)")
    p.add_argument("--resume", action="store_true", default=None, help="continue the run in --out")
    p.add_argument("--devices", help="devices per node: a count, 'auto', or a list like '0,1'")
    p.add_argument("--num-nodes", type=int)
    p.add_argument("--precision", help="Lightning precision: 32-true, bf16-mixed, 16-mixed")
    p.add_argument("--accelerator", help="cpu, gpu, auto")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other training field, e.g. --set ema_decay=0.9998 --set mixup=0.2")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="speed, memory and hardware efficiency of models, side by side")
    p.add_argument("--models", required=True,
                   help="comma-separated names; name:key=value adds a model kwarg or run option "
                        "(channels_last, compile), e.g. microdensenet_cifar_base:memory_efficient=true")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    p.add_argument("--latency-runs", type=int, default=30, help="batch-1 runs; the median is reported")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--pipeline", action="store_true",
                   help="also train through the Lightning pipeline on synthetic data: its img/s and overhead")
    p.add_argument("--json", metavar="PATH", help="write {machine, results} as JSON")
    p.add_argument("--plot", metavar="PNG", help="draw throughput and memory against parameters")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="top-1/top-5/loss of a trained model")
    p.add_argument("--checkpoint", required=True, help="run folder, model.safetensors or a .ckpt")
    _add_data_args(p, "synthetic")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--json", action="store_true", help="last line printed is one JSON object")
    p.add_argument("--per-class", action="store_true", help="accuracy of every class")
    p.add_argument("--plot", metavar="PNG", help="write the confusion matrix here")
    p.set_defaults(func=cmd_eval, batch_size=256, workers=4, seed=0)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"microdense: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("microdense: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
