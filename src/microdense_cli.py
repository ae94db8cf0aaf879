"""The `microdense` command's front door: its argument parser, and the model list, without importing torch.

It lives outside the `microdense` package on purpose: `import microdense` imports torch and timm to register the
models (1.5-3 s on a 2-core machine), which `microdense --help` and `microdense models` have no need of. Every
other command imports `microdense.cli`, which does the work. Its lists (models, recipes, datasets, accelerators) are
the package's own, read from the package's source files rather than imported: each is written once.
"""
import argparse
import ast
import fnmatch
import re
import sys
from pathlib import Path
from typing import Any, Callable, List, NoReturn, Optional, Tuple

PACKAGE = Path(__file__).resolve().parent / "microdense"


def _constant(module: str, name: str) -> Any:
    """The literal value of `name` in a package module, read from its source: the package's own list, without
    importing the package (and with it torch)."""
    for node in ast.parse((PACKAGE / module).read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{name} is not a literal of microdense/{module}")


def _registered_models() -> Tuple[str, ...]:
    """The names the package registers with timm (its `@register_model` functions), in timm's order: read from the
    model families' sources, so `microdense models` answers without importing them."""
    names = []
    for path in sorted([*(PACKAGE / "models").rglob("*.py"), *(PACKAGE / "nas").rglob("*.py")]):
        source = path.read_text()
        if "@register_model" not in source:
            continue
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and any(
                    getattr(d, "id", getattr(d, "attr", None)) == "register_model" for d in node.decorator_list):
                names.append(node.name)
    # NOTE: timm.list_models sorts by natural key: digits as numbers (resnet20 < resnet110)
    return tuple(sorted(names, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]))


MODEL_NAMES = _registered_models()
RECIPES = tuple(sorted(p.stem for p in (PACKAGE / "train" / "recipes").glob("*.yaml")))
DATA_KINDS = _constant("data/config.py", "DATA_NAMES")
ACCELERATORS = _constant("train/config.py", "ACCELERATORS")
# The flags of `microdense train`, each with the configuration field it sets: the parser and the command read this
# one table. The values are checked by the configuration itself (microdense.train.config), not here.
TRAIN_FLAGS = (
    ("--model", "model.name", dict(help="registered model name (default microdensenet_cifar_tiny)")),
    ("--num-classes", "model.num_classes", dict(type=int, help="classifier outputs (default: from the data)")),
    ("--pretrained", "model.pretrained", dict(action="store_true", default=None,
                                              help="start from the model's released weights (a new classifier when "
                                                   "the class count differs)")),
    ("--init-from", "model.init_from", dict(metavar="WEIGHTS",
                                            help="start from these weights: a run folder, model.safetensors, a .ckpt "
                                                 "or a released name (model.tag); the classifier is new when the "
                                                 "class count differs")),
    ("--genotype", "model.kwargs.genotype", dict(help="DARTS-space models: DARTS_V1/DARTS_V2, a JSON file or text, "
                                                      "or a Genotype(...) string")),
    ("--data", "data.name", dict(choices=DATA_KINDS, help="dataset (default: synthetic)")),
    ("--data-dir", "data.root", dict(help="dataset folder (CIFAR root, or an ImageFolder tree)")),
    ("--download", "data.download", dict(action="store_true", default=None, help="download CIFAR if missing")),
    ("--val-split", "data.val_split", dict(type=float, help="hold out this stratified fraction of the training "
                                                            "images")),
    ("--batch-size", "data.batch_size", dict(type=int, help="images per device per step")),
    ("--workers", "data.workers", dict(type=int, help="loader worker processes (large images; default: the "
                                                      "machine's cores, at most 8)")),
    ("--recipe", "recipe", dict(choices=RECIPES, help="training recipe (default fast)")),
    ("--lr", "optim.lr", dict(type=float, help="peak learning rate, per --lr-base-size images when that is set (the "
                                                "recipes set it): a run scales it to its global batch")),
    ("--lr-base-size", "optim.lr_base_size", dict(type=int, metavar="IMAGES",
                                                  help="the global batch --lr is for (the run scales it to batch x "
                                                       "devices x nodes: linearly, or by optim.lr_scale)")),
    ("--weight-decay", "optim.weight_decay", dict(type=float)),
    ("--epochs", "run.epochs", dict(type=int)),
    ("--max-steps", "run.max_steps", dict(type=int, help="stop after this many optimizer steps")),
    ("--time-budget", "run.time_budget", dict(type=float, metavar="MINUTES",
                                              help="stop when training has run this long (validation and saving not "
                                                   "counted); every schedule is fitted to the budget, so the run "
                                                   "still ends at its final learning rate")),
    ("--seed", "run.seed", dict(type=int, help="seed for data order, splits and initialisation")),
    ("--out", "run.out", dict(help="run folder (default runs/<model>-<data>-<time>)")),
    ("--resume", "run.resume", dict(action="store_true", default=None, help="continue the run in --out")),
    ("--restart", "run.restart", dict(action="store_true", default=None,
                                      help="start anew in --out (after a diverged run): what it holds moves into "
                                           "--out/previous-N first")),
    ("--devices", "run.devices", dict(help="devices per node: a count, 'auto', or a list like '0,1'")),
    ("--num-nodes", "run.num_nodes", dict(type=int)),
    ("--precision", "run.precision", dict(help="Lightning precision: 32-true, bf16-mixed, 16-mixed (GPU), ...")),
    ("--accelerator", "run.accelerator", dict(help=f"{', '.join(ACCELERATORS)} (Lightning's names)")),
)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (no usage block) naming the command and where help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def number(kind: Callable[[str], Any], low: float, high: Optional[float] = None, low_open: bool = False,
           high_open: bool = True) -> Callable[[str], Any]:
    """An argparse type: `kind` within [low, high) (open or closed ends as asked)."""
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"
    span = f"{lo}{low}, {'inf' if high is None else high}{hi}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}")
        if (value < low or (low_open and value == low)) or (
                high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; it must lie in {span}")
        return value

    return parse


def _add_data_args(p: argparse.ArgumentParser, checked: bool) -> None:
    """The data flags. `checked`: bound them here (eval); train leaves them to its configuration check."""
    p.add_argument("--data", choices=DATA_KINDS, help="dataset (default: the one the run trained on)")
    p.add_argument("--data-dir", help="dataset folder (CIFAR root, or an ImageFolder tree)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--val-split", type=number(float, 0, 1, low_open=True) if checked else float,
                       help="score this stratified fraction of the training images, held out by --seed (default: "
                            "the images the run held out, on the data it trained on; other data: every image, or its "
                            "own validation split)")
    split.add_argument("--all-images", action="store_true", help="score every image of the data, even those the "
                                                                 "run trained on")
    p.add_argument("--batch-size", type=number(int, 1) if checked else int, help="images per device per step")
    p.add_argument("--workers", type=number(int, 0) if checked else int,
                   help="loader worker processes (large images; default: the machine's cores, at most 8)")
    p.add_argument("--seed", type=number(int, 0, 2 ** 32) if checked else int,
                   help="seed for data order, splits and initialisation (default: the run's, on its kind of data)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="microdense", description="Micro-Dense Nets: models, training, benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("models", help="list registered model names")
    p.add_argument("pattern", nargs="?", default="", help="a word in the name, e.g. 'tiny', or a wildcard filter, e.g. "
                                                       "'microdense*cifar*'")

    p = sub.add_parser("info", help="parameters, MACs and per-stage table of a model")
    p.add_argument("name", help="registered model name (see `microdense models`)")
    p.add_argument("--num-classes", type=number(int, 2), default=None, help="classifier outputs (default: the model's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    p = sub.add_parser("train", help="train a model (no flags: a short demo run on synthetic data)",
                       description="Every flag sets one field of the training configuration (shown in brackets); any "
                                   "field can also be set in a YAML file given with --config, or with --set FIELD="
                                   "VALUE. Flags win over --set, which wins over the file. Every value is checked "
                                   "before any data is read or any folder is made.")
    p.add_argument("--config", help="YAML file of training fields, by section (model, data, optim, run)")
    for flag, field, kwargs in TRAIN_FLAGS:
        shown = {} if "choices" in kwargs or "action" in kwargs else dict(metavar=field.rsplit(".", 1)[-1].upper())
        p.add_argument(flag, dest=field, **{**shown, **kwargs, "help": f"{kwargs.get('help', '')} [{field}]".lstrip()})
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="any other training field by its dotted name, e.g. --set optim.ema_decay=0.9998 --set "
                        "data.cutout=16")
    p.add_argument("--quiet", action="store_true", help="print only the closing line (warnings still go to stderr)")

    p = sub.add_parser("bench", help="speed, memory and hardware efficiency of models, side by side")
    p.add_argument("--models", required=True,
                   help="comma-separated names; name:key=value adds a model kwarg or run option "
                        "(channels_last, compile, amp, grad_checkpointing, retain_memory), "
                        "e.g. microdensenet_cifar_base:memory_efficient=true")
    p.add_argument("--batch-size", type=number(int, 1), default=64)
    p.add_argument("--steps", type=number(int, 1), default=10, help="timed steps per measurement")
    p.add_argument("--rounds", type=number(int, 1), default=1,
                   help="measure every model this many times, round-robin, and report medians (a shared machine's "
                        "drift then moves every model alike)")
    p.add_argument("--warmup", type=number(int, 0), default=3, help="untimed steps before each measurement")
    p.add_argument("--latency-runs", type=number(int, 1), default=30, help="batch-1 runs; the median is reported")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backend", default="eager",
                   help="comma-separated inference backends measured for every model, side by side: eager (also "
                        "trains), compile, onnxruntime; e.g. --backend eager,compile,onnxruntime")
    p.add_argument("--pipeline", action="store_true",
                   help="also train through the Lightning pipeline on synthetic data: its img/s and overhead")
    p.add_argument("--kernels", action="store_true",
                   help="also list the oneDNN convolution kernels one training step runs, with their time (CPU)")
    p.add_argument("--profile", action="store_true",
                   help="also profile --steps training steps (torch.profiler): where a step's time goes, by operator")
    p.add_argument("--json", metavar="PATH", help="write {machine, results} as JSON")
    p.add_argument("--plot", metavar="PNG", help="draw throughput and memory against parameters")

    p = sub.add_parser("eval", help="top-1/top-5/loss of a trained model")
    p.add_argument("--checkpoint", required=True,
                   help="run folder, model.safetensors, a .ckpt, or a released name (model.tag)")
    _add_data_args(p, checked=True)
    p.add_argument("--accelerator", choices=ACCELERATORS, default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress and notes: stderr)")
    p.add_argument("--per-class", action="store_true", help="accuracy of every class")
    p.add_argument("--plot", metavar="PNG", help="write the confusion matrix here")
    p.add_argument("--flip", action="store_true", help="average each image's logits with its mirror image's")
    p.set_defaults(batch_size=256)

    p = sub.add_parser("predict", help="top-k labels for image files and folders")
    p.add_argument("--checkpoint", required=True,
                   help="run folder, model.safetensors, a .ckpt, a released name (model.tag), or an exported .onnx / "
                        "TorchScript .pt")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders walked recursively")
    p.add_argument("--topk", type=number(int, 1), help="labels per image (default 5, or every class if fewer)")
    p.add_argument("--batch-size", type=number(int, 1), default=32)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    out.add_argument("--csv", metavar="OUT", help="write path,rank,label,class_index,probability rows here")

    p = sub.add_parser("export", help="an ONNX or TorchScript file of a trained model checked against it, or a "
                                      "folder in the model hubs' layout",
                       description="onnx, torchscript: BatchNorm layers that directly follow a conv are folded into "
                                   "it first; the file is kept only if its logits match the source model within 1e-4 "
                                   "with the same top-1. TorchScript is deprecated by PyTorch; prefer onnx. hub: "
                                   "model.safetensors, config.json and a README.md model card, written by timm's "
                                   "save_for_hf, which timm.create_model('local-dir:FOLDER', pretrained=True) loads "
                                   "(a run folder, or a released name).")
    p.add_argument("--checkpoint", required=True,
                   help="run folder, model.safetensors, a .ckpt, or a released name (model.tag)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "hub"))
    p.add_argument("--out", help="file to write (default: beside the checkpoint, model.onnx or model.pt); hub: the "
                                 "new folder (default: the checkpoint's name with -hub)")
    p.add_argument("--command", dest="reproduce", metavar="COMMAND",
                   help="hub: the command that reproduces the run, for the card (default: the file RUN/command, which "
                        "microdense train writes)")
    p.add_argument("--opset", type=number(int, 13, 23, high_open=False), help="ONNX opset (default 18)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="any batch size (default: one image per call, the serving shape)")
    p = sub.add_parser("study", help="run, report and list studies: each claim of the paper as an experiment")
    study = p.add_subparsers(dest="study_command", required=True, metavar="ACTION", parser_class=Parser)
    q = study.add_parser("run", help="train every (entry, seed) of a study; resumes where it stopped",
                         description="Each run goes through `microdense train`'s code path into DIR/runs/<run>/ and "
                                     "appends one row to DIR/results.jsonl. Finished runs are skipped and interrupted "
                                     "ones resume, so the same command continues a killed study.")
    q.add_argument("study", metavar="STUDY", help="a study YAML file, or a packaged study's name (`microdense study "
                                                  "list`)")
    q.add_argument("--out", required=True, metavar="DIR", help="the study's folder")
    q.add_argument("--shard", metavar="I/N", help="run only the runs whose index is I modulo N (I counts from 0): "
                                                  "one job of an array, e.g. --shard $SLURM_ARRAY_TASK_ID/8")
    q.add_argument("--test-dir", metavar="DIR", help="also evaluate every finished run on this ImageFolder tree")
    q.add_argument("--data", choices=DATA_KINDS, help="train on this dataset instead of the study's")
    q.add_argument("--data-dir", help="the dataset's folder (instead of the study's)")
    q.add_argument("--smoke", action="store_true",
                   help="the study's smoke form: every entry, one seed, 2 steps on a few synthetic images")
    q.add_argument("--quiet", action="store_true", help="no training progress bars; the study's own lines stay")
    q.add_argument("--allow-dirty", action="store_true",
                   help="run although the microdense sources have uncommitted changes (each row records it)")
    q.add_argument("--lanes", type=number(int, 1, 26, high_open=False), metavar="N",
                   help="run the study in N niced lanes, one run each at a time, from a git worktree pinned at the "
                        "commit the study began at (DIR/lanes-commit); Ctrl-C stops every run, each saving its "
                        "checkpoint, and the same command resumes")
    q.add_argument("--threads", type=number(int, 1, 1024, high_open=False), default=1, metavar="T",
                   help="with --lanes: compute threads per run (default 1)")
    q = study.add_parser("report", help="report.md, report.png and a printed table of a study's results")
    q.add_argument("dir", metavar="DIR", help="the study's folder (holds results.jsonl)")
    q = study.add_parser("release", help="release each entry's best seed as its model's pretrained weights",
                         description="The seed is chosen by val top-1, once every seed of the entry has finished; its "
                                     "run folder is released as `<model>.<TAG>` (`scripts/release-weights.sh` does "
                                     "one run folder).")
    q.add_argument("dir", metavar="DIR", help="the study's folder (holds study.yaml and results.jsonl)")
    q.add_argument("--tag", required=True, help="the release's name after the model's: timm's model.tag, e.g. cifar10")
    q.add_argument("--entries", metavar="LABELS", help="comma-separated entry labels (default: every entry)")
    q.add_argument("--out", metavar="DIR", help="write the releases here (default: the package's weights folder)")
    q.add_argument("--data-note", metavar="TEXT", help="what the data is, in words, for each model card")
    q.add_argument("--format", choices=("package", "hub"), default="package",
                   help="package: <model>.<TAG>.safetensors and .md (what timm.create_model(model, pretrained=True) "
                        "loads); hub: a folder <model>.<TAG> in the model hubs' layout, in --out (required)")
    q = study.add_parser("decide", help="apply a study's decision rule to its rows: DIR/decision.txt",
                         description="The rule is the study file's decision section as it stood at the commit of the "
                                     "study's first row; a rule changed since is reported and refused.")
    q.add_argument("study", metavar="STUDY", help="a study YAML file, or a packaged study's name")
    q.add_argument("--out", required=True, metavar="DIR", help="the study's folder (holds results.jsonl)")
    q.add_argument("--accept-changed-rule", action="store_true",
                   help="decide although the rule differs from the one registered before the first row (decision.txt "
                        "says so)")
    q = study.add_parser("bench", help="a study's speed leg: its entries side by side in `microdense bench`, alone on "
                                       "the machine; DIR/bench.json and bench.txt")
    q.add_argument("study", metavar="STUDY", help="a study YAML file, or a packaged study's name")
    q.add_argument("--out", required=True, metavar="DIR", help="the study's folder (holds study.yaml)")
    q = study.add_parser("claims", help="the paper's claims with the verdicts their studies' rules give: "
                                        "DIR/claims.md")
    q.add_argument("dir", metavar="DIR", help="the folder holding each study's folder under its name (docs/results)")
    study.add_parser("list", help="the packaged studies and the claim each tests")
    return parser


def model_names(pattern: str = "") -> List[str]:
    """The registered names `pattern` matches: a wildcard pattern, or a bare word anywhere in the name ('tiny')."""
    pattern = pattern or "*"
    if not any(c in pattern for c in "*?["):  # NOTE: a whole-name match alone would list nothing for 'tiny'
        pattern = f"*{pattern}*"
    return [n for n in MODEL_NAMES if fnmatch.fnmatchcase(n, pattern)]


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what was typed: a study records it beside each result
    if args.command == "models":
        for name in model_names(args.pattern):
            print(name)
        return 0
    from microdense.cli import run_command
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
