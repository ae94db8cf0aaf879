"""The `microdense` commands (the parser is `microdense_cli`'s). The command line owns the terminal.

One error policy: library code never prints; it raises the package's own types (`microdense.errors`: a bad value,
bad data, bad weights, a diverged run; a path given as a value that cannot serve, such as a file where a folder must
be, is one of these) and `OSError`s (`FileNotFoundError`, ...) where the file system refuses, with messages that
name fields, never flags. Here alone they become one line on stderr and a non-zero exit status (the error's own,
or 1 for an `OSError`), never a traceback. Every other exception, a `ValueError` or `TypeError` from
this package included, is a bug and keeps its traceback.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional

from microdense.errors import MicrodenseError


class UserError(MicrodenseError):
    """A command-line mistake found by the command line itself (a malformed --set, conflicting flags)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def _fmt_count(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _fmt(value: Optional[float], spec: str) -> str:
    """A table cell: '-' where a figure does not apply (inference-only backends have no training figures)."""
    return "-" if value is None else spec.format(value)


def _console():
    """A rich console that does not squeeze tables to 80 columns when output is piped."""
    from rich.console import Console
    return Console(width=None if sys.stdout.isatty() else 160)


def cmd_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from microdense.models.size import measure_size
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
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return out


def _quiet_logs() -> None:
    """--quiet: Lightning's, timm's (loading pretrained weights) and our INFO lines off, and with ours the
    image-decoding bars; warnings still show."""
    import logging
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "timm", "microdense"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_train(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from microdense.saved.run_folder import CONFIG_FILE
    from microdense.train.config import FIELDS, resolve_config
    from microdense.train.interrupt import TrainingInterrupted
    from microdense.train.run import train

    # NOTE: after Lightning's import, which gives its loggers a handler of their own when the root has none.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quiet:
        _quiet_logs()
    # NOTE: each train flag stores its value under the field it declares (microdense_cli.TRAIN_FLAGS).
    flags = {key: value for key, value in vars(args).items()
             if value is not None and (key in FIELDS or key.startswith("model.kwargs."))}
    cli = {**_parse_set(args.set), **flags}  # flags win over --set
    out, config_file = flags.get("run.out"), args.config
    if flags.get("run.resume") and out and not config_file and (Path(out) / CONFIG_FILE).exists():
        config_file = str(Path(out) / CONFIG_FILE)  # continue the run as it was configured
    cfg = resolve_config(cli, config_file)
    try:
        result = train(cfg, progress=not args.quiet, command=shlex.join(["microdense", *args.argv]))
    except TrainingInterrupted as e:
        print(f"microdense: interrupted at step {e.step}; {e.checkpoint} saved. Continue with: "
              f"microdense train --out {e.run_dir} --resume", file=sys.stderr)
        return 130
    if result.primary:  # one summary, from the global-rank-0 process
        top1 = "n/a" if result.val_top1 is None else f"{100 * result.val_top1:.2f}%"
        top5 = "n/a" if result.val_top5 is None else f"{100 * result.val_top5:.2f}%"
        rate = "n/a" if result.train_img_s is None else f"{result.train_img_s:.0f} img/s"
        # NOTE: a resumed run's training seconds count the processes before it; its wall time is this process's
        trained = f"{result.train_seconds:.0f}s training"
        spent = (f"{trained} ({result.seconds:.0f}s in all)" if result.resumed_at_step is None
                 else f"{trained} in all, {result.seconds:.0f}s of wall time since the resume at step "
                      f"{result.resumed_at_step}")
        print(f"done: {cfg.model.name} on {cfg.data.name}, {result.epochs:.2f} epochs / {result.steps} steps, "
              f"{spent}; val top-1 {top1}, top-5 {top5}; {rate} in training; run folder {result.run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from microdense.data.config import DataCfg
    from microdense.saved.weights_source import WeightsSource
    from microdense.train.evaluate import evaluate

    if args.data is None and WeightsSource.resolve(args.checkpoint).release:
        raise UserError(f"{args.checkpoint} is released weights, whose training images are not here; name the data to "
                        "score it on with --data (e.g. --data imagefolder --data-dir DIR)")
    data = DataCfg(name=args.data or "synthetic", root=args.data_dir, val_split=args.val_split,
                   batch_size=args.batch_size, workers=args.workers)
    result = evaluate(args.checkpoint, data, args.seed, args.accelerator, args.flip, args.plot,
                      own_data=args.data is None, all_images=args.all_images)
    # NOTE: --json owns stdout: one JSON object, and every other line goes to stderr
    notes = sys.stderr if args.json else sys.stdout
    if args.per_class and not args.json:
        width = max(len(c) for c in result.per_class)
        for name, acc in result.per_class.items():
            print(f"{name:<{width}}  {100 * acc:6.2f}%")
    if args.plot:
        print(f"confusion matrix: {args.plot}", file=notes)
    summary = dict(top1=result.top1, top5=result.top5, loss=result.loss, images=result.images, scored=result.scored)
    if args.json:
        if args.per_class:
            summary["per_class"] = result.per_class
        print(json.dumps(summary))
    else:
        print(f"top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%  loss {result.loss:.4f}  on "
              f"{result.scored}")
    return 0


def _run_bench(specs: List[str], batch_size: int, steps: int, warmup: int, latency_runs: int, rounds: int,
               device: str = "cpu", pipeline: bool = False, kernels: bool = False, profile: bool = False) -> dict:
    """`run_bench` under a progress bar on stderr; every spec is checked first, so a bad one is one line."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from microdense.bench.run import run_bench
    from microdense.bench.worker import check_spec

    # NOTE: the pipeline's leg trains through Lightning, so its worker is the trainer's; the bench imports no trainer
    worker = "microdense.train.pipeline_speed" if pipeline else None
    if not specs:
        raise UserError("--models needs at least one model name", exit_code=2)
    for spec in specs:  # before the progress bar: a bad spec is one line, not a half-drawn bar
        check_spec(spec)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task("probing matmul rate", total=len(specs) * rounds)

        def progress(done: int, spec: str) -> None:
            bar.update(task, completed=done, description=f"benchmarking {spec}")

        report = run_bench(specs, batch_size, steps, warmup, device, latency_runs, worker, progress, kernels,
                           profile, rounds)
        bar.update(task, completed=len(specs) * rounds, description="done")
    return report


def _print_bench(out, report: dict, batch_size: int, rounds: int, pipeline: bool = False) -> None:
    """The machine's line and one table row per spec."""
    from rich.table import Table

    m = report["machine"]
    out.print(f"{m.get('gpu', m['cpu'])}, {m['cores']} cores, torch {m['torch']} ({m['device']}, "
              f"{m['torch_threads']} threads); dense fp32 matmul {m['matmul_fp32_flops'] / 1e9:.1f} GFLOP/s; "
              f"batch {batch_size}" + (f"; medians of {rounds} rounds" if rounds > 1 else ""), soft_wrap=True)
    table = Table(show_edge=False)
    cols = ["model", "params", "MACs", "train img/s", "infer img/s", "latency ms", "peak MB", "efficiency"]
    if pipeline:
        cols += ["pipeline img/s", "overhead"]
    for col in cols:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in report["results"]:
        row = [r["model"], _fmt_count(r["params"]), _fmt_count(r["macs"]), _fmt(r["train_img_s"], "{:.1f}"),
               _fmt(r["infer_img_s"], "{:.1f}"), _fmt(r["latency_ms"], "{:.2f}"), _fmt(r["peak_mem_mb"], "{:.0f}"),
               _fmt(r["efficiency"], "{:.2f}")]
        if pipeline:
            row += [_fmt(r.get("pipeline_img_s"), "{:.1f}"), _fmt(r.get("pipeline_overhead"), "{:+.1%}")]
        table.add_row(*row)
    out.print(table)


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from microdense.bench.run import plot_bench, write_json

    backends = [b for b in args.backend.split(",") if b]
    specs = [s if b == "eager" else f"{s}:backend={b}" for s in args.models.split(",") if s for b in backends]
    report = _run_bench(specs, args.batch_size, args.steps, args.warmup, args.latency_runs, args.rounds, args.device,
                        args.pipeline, args.kernels, args.profile)
    out = _console()
    _print_bench(out, report, args.batch_size, args.rounds, args.pipeline)
    for r in report["results"] if args.profile else []:
        p = r["profile"]
        out.print(f"{r['model']}: {p['step_ms']:.0f} ms per step: " + "; ".join(
            f"{name} {100 * g['share']:.0f}%" for name, g in p["groups"].items()), soft_wrap=True)
    for r in report["results"] if args.kernels else []:
        total = sum(k["ms"] for k in r.get("kernels", [])) or 1.0
        out.print(f"{r['model']}: " + "; ".join(
            f"{k['impl']} {k['prop'].replace('_training', '')}{' grouped' if k['grouped'] else ''} "
            f"{100 * k['ms'] / total:.0f}%" for k in r.get("kernels", [])[:6]), soft_wrap=True)
    if args.json:
        write_json(Path(args.json), report)
        out.print(f"wrote {args.json}")
    if args.plot:
        plot_bench(Path(args.plot), report)
        out.print(f"wrote {args.plot}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import csv
    import io
    import logging

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from microdense.deploy.predict import collect_images, open_predictor, predict
    from microdense.io import atomic_write_text

    files = collect_images(args.paths)
    if not files:
        raise UserError(f"no image files under {', '.join(args.paths)}", exit_code=1)
    predictor = open_predictor(args.checkpoint)
    topk = args.topk or min(5, len(predictor.classes))
    skipped = []

    def skip(path, why: str) -> None:
        skipped.append(path)
        logging.getLogger("microdense").warning("skipped %s: not a readable image (%s)", path, why)

    rows, done = [], 0
    with Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True, disable=len(files) < 2) as bar:
        task = bar.add_task("predict", total=len(files))
        for pred in predict(predictor, files, topk, args.batch_size, skip):
            done += 1
            bar.update(task, completed=done + len(skipped))
            if args.json:
                print(json.dumps(dict(path=pred.path, top=[dict(label=lab, index=i, probability=p)
                                                           for lab, i, p in pred.top])))
            elif args.csv:
                rows += [(pred.path, rank + 1, lab, i, f"{p:.6f}") for rank, (lab, i, p) in enumerate(pred.top)]
            else:
                print(f"{pred.path}: " + ", ".join(f"{lab} {100 * p:.1f}%" for lab, _, p in pred.top))
    if args.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(("path", "rank", "label", "class_index", "probability"))
        writer.writerows(rows)
        atomic_write_text(args.csv, buf.getvalue())
        print(f"wrote {len(rows) // topk} predictions to {args.csv}", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s)", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from microdense.deploy.export import DEFAULT_OPSET, SUFFIXES, export_model_file
    from microdense.saved.weights_source import WeightsSource

    if args.format != "onnx" and (args.opset is not None or args.dynamic_batch):
        raise UserError("--opset and --dynamic-batch are ONNX options; drop them or use --format onnx", exit_code=2)
    if args.format != "hub" and args.reproduce:
        raise UserError("--command is for --format hub's model card; drop it or use --format hub", exit_code=2)
    checkpoint = Path(args.checkpoint)
    if args.format == "hub":
        from microdense.deploy.hub import write_hub_folder
        out = Path(args.out) if args.out else Path(f"{checkpoint.resolve().name}-hub")
        folder = write_hub_folder(args.checkpoint, out, command=args.reproduce)
        print(f"wrote {folder} (model.safetensors, config.json, README.md); load it with "
              f"timm.create_model('local-dir:{folder}', pretrained=True) after import microdense")
        return 0
    source = WeightsSource.resolve(args.checkpoint)
    if source.release:  # the file goes to the working folder, named after the release
        default = Path(f"{args.checkpoint}{SUFFIXES[args.format]}")
    else:
        default = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / f"model{SUFFIXES[args.format]}"
    out = Path(args.out) if args.out else default
    result = export_model_file(source.loaded, out, args.format, args.opset or DEFAULT_OPSET, args.dynamic_batch)
    print(f"{result.fold.describe()}")
    print(f"checked on {result.images} inputs: max |logit difference| {result.max_abs_diff:.2e} (<= 1e-4), "
          f"same top-1; wrote {result.path}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    import logging

    from microdense.study.spec import load_study, packaged_studies, parse_shard, smoke, with_data

    if args.study_command == "list":
        studies = packaged_studies()
        width = max(map(len, studies), default=0)  # NOTE: the longest name sets the column, where 16 was too narrow
        for name, path in studies.items():
            print(f"{name:<{width}}  {load_study(str(path)).claim}")
        return 0
    if args.study_command == "report":
        from microdense.study.report import write_report
        report = write_report(Path(args.dir))
        _console().print(report.table)
        written = [str(p) for p in (report.markdown, report.plot, report.curves) if p]
        print(f"wrote {', '.join(written[:-1])} and {written[-1]}")
        return 0
    if args.study_command == "claims":
        from microdense.study.claims import write_claims
        path = write_claims(Path(args.dir))
        print(path.read_text(), end="")
        print(f"wrote {path}")
        return 0
    if args.study_command == "decide":
        from microdense.study.decide import decide, write_decision
        decision = decide(load_study(args.study), Path(args.out))
        print(decision.text(args.accept_changed_rule), end="")
        print(f"wrote {write_decision(decision, Path(args.out), args.accept_changed_rule)}")
        return 0
    if args.study_command == "bench":
        from rich.console import Console

        from microdense.bench.run import write_json
        from microdense.io import atomic_write_text
        from microdense.study.speed_leg import bench_specs, study_as_run

        study, folder = load_study(args.study), Path(args.out)
        if study.bench is None:
            raise UserError(f"study {study.name} has no bench section: it names no speed leg to measure", exit_code=2)
        leg = study.bench
        specs = bench_specs(study_as_run(folder)["entries"], leg)
        report = _run_bench([spec for _, spec in specs], leg.batch_size, leg.steps, leg.warmup, 1, leg.rounds)
        for (label, _), row in zip(specs, report["results"]):
            row["label"] = label
        recorded = Console(record=True, width=200)
        _print_bench(recorded, report, leg.batch_size, leg.rounds)
        write_json(folder / "bench.json", report)
        atomic_write_text(folder / "bench.txt", recorded.export_text())
        print(f"wrote {folder / 'bench.json'} and {folder / 'bench.txt'}")
        return 0
    if args.study_command == "release":
        from microdense.study.best_seeds import release_best_seeds
        labels = args.entries.split(",") if args.entries else None
        if args.format == "hub" and not args.out:
            raise UserError("--format hub writes one folder per entry into --out DIR; give --out", exit_code=2)
        for chosen, path in release_best_seeds(Path(args.dir), args.tag, labels, args.out and Path(args.out),
                                               args.data_note, hub=args.format == "hub"):
            others = ", ".join(f"seed {s} {100 * top1:.2f}%" for s, top1 in chosen.others.items())
            written = path if args.format == "hub" else f"{path} and {path.with_suffix('.md')}"
            print(f"{chosen.label}: seed {chosen.row['seed']} (val top-1 {100 * chosen.row['val_top1']:.2f}%; "
                  f"chosen over {others or 'no other seed'}) released as {written}")
        return 0
    if args.lanes:
        from microdense.study.lanes import run_lanes
        if args.shard or args.allow_dirty:
            raise UserError("--lanes runs every run of the study from a pinned commit; it takes no --shard or "
                            "--allow-dirty", exit_code=2)
        # NOTE: the runs start in the pinned worktree, so folders are given to them whole
        forwarded = ([f"--data={args.data}"] if args.data else []) + [
            f"--{name.replace('_', '-')}={Path(getattr(args, name)).resolve()}" for name in ("data_dir", "test_dir")
            if getattr(args, name)] + (["--smoke"] if args.smoke else [])
        study = with_data(load_study(args.study), args.data, args.data_dir)
        study_arg = args.study if not Path(args.study).is_file() else str(Path(args.study).resolve())
        return run_lanes(smoke(study) if args.smoke else study, study_arg, Path(args.out), args.lanes, forwarded,
                         args.threads)
    from microdense.study.runner import run_study
    from microdense.train.interrupt import TrainingInterrupted

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quiet:
        _quiet_logs()
    shard = parse_shard(args.shard)
    study = with_data(load_study(args.study), args.data, args.data_dir)
    if args.smoke:
        study = smoke(study)
    try:
        done = run_study(study, Path(args.out), shard, args.test_dir, progress=not args.quiet,
                         command=shlex.join(["microdense", *args.argv]), allow_dirty=args.allow_dirty)
    except (KeyboardInterrupt, TrainingInterrupted):
        print("microdense: study interrupted; the same command resumes it", file=sys.stderr)
        return 130
    print(f"study {study.name}: {done.ran} run(s) done now, {done.skipped} done before ({done.planned} in the "
          f"study, all shards); rows in {Path(args.out) / 'results.jsonl'}; report: microdense study report {args.out}")
    return 0


COMMANDS = {"info": cmd_info, "train": cmd_train, "bench": cmd_bench, "eval": cmd_eval, "predict": cmd_predict,
            "export": cmd_export, "study": cmd_study}


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command; a user error ends as one line on stderr and a non-zero exit, never a traceback."""
    from microdense.allocator import retain_freed_memory
    retain_freed_memory()  # the command owns its process: reuse freed activation memory (microdense.allocator)
    try:
        return COMMANDS[args.command](args)
    except MicrodenseError as e:
        print(f"microdense: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a path to fix: missing, unwritable, already taken
        print(f"microdense: error: {e.strerror + ': ' + str(e.filename) if e.filename and e.strerror else e}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("microdense: interrupted", file=sys.stderr)
        return 130
