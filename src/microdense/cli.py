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


def cmd_models(args: argparse.Namespace) -> int:
    from microdense.models import list_models
    for name in list_models(args.pattern):
        print(name)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from microdense.bench.size import measure_size
    from microdense.models import create_model, resolve_input_size

    kwargs = {} if args.num_classes is None else dict(num_classes=args.num_classes)
    model = create_model(args.name, **kwargs)
    size = measure_size(args.name, model, resolve_input_size(model))
    if args.json:
        print(json.dumps(size.to_dict()))
        return 0
    console = Console()
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
