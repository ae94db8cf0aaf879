"""A study as data: the YAML file that names a claim, the runs that test it and the budget every run gets.

    name: ablation                                       # optional: the file's name without .yaml
    claim: "C4: pyramidal widths, adaptive cardinality and micro-dense aggregation each help"
    data: {name: cifar10, root: data, val_split: 0.1}   # the `data` section of a training configuration
    recipe: budget                                       # a training recipe ...
    overrides: {optim.label_smoothing: 0.0}              # ... and any training fields on top of it
    budget: {epochs: 1}                                  # one of: epochs, steps, time_budget (minutes)
    seeds: [0, 1]
    reference: tiny                                      # the label every other entry is compared with
    entries:
      - {label: tiny, model: microdensenet_cifar_tiny}
      - {label: residual, model: microdensenet_cifar_tiny, kwargs: {aggregation: residual}, params_like: tiny}
      - {label: tiny-ema, model: microdensenet_cifar_tiny, overrides: {optim.ema_decay: 0.999}}  # a training change

Loading a study checks all of it (fields, models, labels, the budget, every run's training configuration) before
anything runs; `plan` then lists its runs in a fixed order (seed by seed, entries in file order), which is what
`--shard I/N` divides.
"""
import dataclasses
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from microdense.errors import ConfigError
from microdense.study.decision import BenchLeg, parse_bench, parse_decision
from microdense.train.config import TrainConfig, merge, nest, resolve_config

STUDY_FIELDS = ("name", "description", "claim", "data", "recipe", "overrides", "budget", "seeds", "reference",
                "entries", "decision", "bench")
ENTRY_FIELDS = ("label", "model", "kwargs", "overrides", "params_like")
BUDGETS = ("epochs", "steps", "time_budget")
SMOKE = dict(data=dict(name="synthetic", val_split=None, root=None, limit_images=4, batch_size=2, workers=0),
             budget=dict(steps=2))
# NOTE: fields a study owns per run (set from its entries, seeds and budget) or that would make its runs unequal.
RUN_FIELDS = ("recipe", "model.name", "model.kwargs", "run.seed", "run.out", "run.resume", "run.epochs",
              "run.max_steps", "run.time_budget")
BUDGET_FIELDS = {"epochs": "run.epochs", "steps": "run.max_steps", "time_budget": "run.time_budget"}


@dataclass(frozen=True)
class Entry:
    label: str
    model: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    params_like: Optional[str] = None  # the label whose parameter count this entry's width is matched to
    overrides: Dict[str, Any] = field(default_factory=dict)  # training fields of this entry's runs alone


@dataclass(frozen=True)
class Study:
    name: str
    claim: str
    data: Dict[str, Any]
    recipe: str
    overrides: Dict[str, Any]
    budget: Dict[str, Any]
    seeds: Tuple[int, ...]
    reference: str
    entries: Tuple[Entry, ...]
    description: str = ""
    decision: Optional[Any] = None  # the rule written before the first run (microdense.study.decision)
    bench: Optional[BenchLeg] = None  # the speed leg
    path: Optional[str] = None  # the file it was read from, if any

    def entry(self, label: str) -> Entry:
        return next(e for e in self.entries if e.label == label)

    def budget_text(self) -> str:
        (kind, value), = self.budget.items()
        return {"epochs": f"{value} epochs", "steps": f"{value} steps", "time_budget": f"{value} min"}[kind]


@dataclass(frozen=True)
class PlannedRun:
    index: int  # position in the study's fixed order (what --shard divides)
    entry: Entry
    seed: int

    @property
    def name(self) -> str:
        """The run's folder under DIR/runs/, and its key in results.jsonl."""
        return f"{slug(self.entry.label)}-seed{self.seed}"


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", label).strip("-").lower() or "entry"


def packaged_studies() -> Dict[str, Path]:
    """name -> file of the studies shipped with the package."""
    folder = Path(str(resources.files("microdense.study") / "studies"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _unknown(where: str, given: Dict[str, Any], allowed: Tuple[str, ...]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {unknown}; fields are {', '.join(allowed)}")


def _overrides(raw: Any, where: str) -> Dict[str, Any]:
    """Training fields a study (or one entry) sets, as nested sections: known fields (the flat layout's names read
    too), none of those the study owns."""
    if not isinstance(raw or {}, dict):
        raise ConfigError(f"{where} must be a mapping of training fields, got {raw!r}")
    overrides = nest(dict(raw or {}), where, legacy=True)
    names = [key for key, value in overrides.items() if not isinstance(value, dict)]
    names += [f"{section}.{name}" for section, fields in overrides.items() if isinstance(fields, dict)
              for name in fields]
    owned = sorted(n for n in names if n in RUN_FIELDS or n.startswith("data."))
    if owned:
        raise ConfigError(f"{where} may not set {owned}: the study sets them (entries, seeds, budget, recipe, data)")
    return overrides


def _entries(raw: Any, where: str) -> Tuple[Entry, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: entries must be a non-empty list of {{model, kwargs, label, params_like}}")
    entries = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "model" not in item:
            raise ConfigError(f"{where}: entry {i + 1} needs at least a model, got {item!r}")
        _unknown(f"{where}: entry {i + 1}", item, ENTRY_FIELDS)
        kwargs = item.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{where}: entry {i + 1}'s kwargs must be a mapping, got {kwargs!r}")
        overrides = _overrides(item.get("overrides"), f"{where}: entry {i + 1}'s overrides")
        entries.append(Entry(str(item.get("label") or item["model"]), str(item["model"]), dict(kwargs),
                             item.get("params_like"), overrides))
    labels = [e.label for e in entries]
    slugs = [slug(label) for label in labels]
    if len(set(slugs)) != len(slugs):
        dup = sorted({label for label, s in zip(labels, slugs) if slugs.count(s) > 1})
        raise ConfigError(f"{where}: labels {dup} are not distinct (run folders are named after them); relabel them")
    for e in entries:
        if e.params_like is not None and e.params_like not in labels:
            raise ConfigError(f"{where}: entry {e.label!r} has params_like {e.params_like!r}, which is no entry's "
                             f"label; labels are {', '.join(labels)}")
        if e.params_like == e.label:
            raise ConfigError(f"{where}: entry {e.label!r} has params_like itself")
    return tuple(entries)


def parse_study(raw: Any, name: str, where: str) -> Study:
    """A Study from a parsed YAML mapping; every field's shape is checked here, the models in `check_study`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must hold a mapping of study fields ({', '.join(STUDY_FIELDS)})")
    _unknown(where, raw, STUDY_FIELDS)
    budget = raw.get("budget")
    if not isinstance(budget, dict) or len(budget) != 1 or next(iter(budget)) not in BUDGETS:
        raise ConfigError(f"{where}: budget must set exactly one of {', '.join(BUDGETS)}, e.g. {{epochs: 10}}; "
                         f"got {budget!r}")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seeds must be a list of distinct whole numbers >= 0, got {seeds!r}")
    if not isinstance(raw.get("data") or {}, dict):
        raise ConfigError(f"{where}: data must be a mapping, got {raw['data']!r}")
    overrides = _overrides(raw.get("overrides"), f"{where}: overrides")
    entries = _entries(raw.get("entries"), where)
    reference = raw.get("reference", entries[0].label)
    if reference not in [e.label for e in entries]:
        raise ConfigError(f"{where}: reference {reference!r} is no entry's label; labels are "
                         f"{', '.join(e.label for e in entries)}")
    return Study(name=str(raw.get("name", name)), claim=str(raw.get("claim", "")), data=dict(raw.get("data") or {}),
                 recipe=str(raw.get("recipe", TrainConfig.recipe)), overrides=overrides, budget=dict(budget),
                 seeds=tuple(seeds), reference=reference, entries=entries,
                 description=str(raw.get("description", "")).strip(),
                 decision=parse_decision(raw.get("decision"), where, [e.label for e in entries]),
                 bench=parse_bench(raw.get("bench"), where))


def load_study(study: str) -> Study:
    """A study from a YAML file, or by the name of a packaged study."""
    packaged = packaged_studies()
    path = Path(study)
    if not path.is_file():
        if study not in packaged:
            raise ConfigError(f"no study file {study!r} and no packaged study of that name; packaged studies are "
                             f"{', '.join(packaged)} (see `microdense study list`)")
        path = packaged[study]
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"study file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return dataclasses.replace(parse_study(raw, path.stem, f"study file {path}"), path=str(path))


def with_data(study: Study, name: Optional[str], root: Optional[str]) -> Study:
    """The study on other data (`--data`, `--data-dir`): the rest of its data section stays."""
    data = dict(study.data)
    if name:
        data["name"] = name
    if root:
        data["root"] = root
    return dataclasses.replace(study, data=data)


def smoke(study: Study) -> Study:
    """The study's smoke form: every entry, one seed, a few steps on a few synthetic images."""
    return dataclasses.replace(study, name=f"{study.name}-smoke", data={**study.data, **SMOKE["data"]},
                               budget=dict(SMOKE["budget"]), seeds=study.seeds[:1])


def plan(study: Study) -> List[PlannedRun]:
    """Every (entry, seed) run in the fixed order: all entries at the first seed, then at the next, ..."""
    runs = [(e, s) for s in study.seeds for e in study.entries]
    return [PlannedRun(i, e, s) for i, (e, s) in enumerate(runs)]


def parse_shard(text: Optional[str]) -> Tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N; None -> (0, 1)."""
    if text is None:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError(f"shard {text!r} is not I/N with 0 <= I < N (shards count from 0: 0/2 and 1/2)")
    return int(m.group(1)), int(m.group(2))


def run_values(study: Study, entry_kwargs: Dict[str, Any], entry: Entry, seed: int, out: Path,
               resume: bool) -> Dict[str, Any]:
    """One run's training values, nested by section, for `resolve_config`."""
    (kind, value), = study.budget.items()
    owned = {"data": dict(study.data), "recipe": study.recipe,
             "model": {"name": entry.model, "kwargs": entry_kwargs},
             "run": {"seed": seed, "out": str(out), "resume": resume, BUDGET_FIELDS[kind].split(".")[1]: value}}
    return merge(study.overrides, entry.overrides, owned)


def run_train_config(study: Study, entry_kwargs: Dict[str, Any], entry: Entry, seed: int, out: Path,
                     resume: bool = False) -> TrainConfig:
    """The TrainConfig `microdense train` would build for this run: recipe < the study's overrides < the entry's
    overrides < the study's run fields.
    A budget of steps or minutes is the run's only limit (a recipe's own epochs no longer apply)."""
    cfg = resolve_config(run_values(study, entry_kwargs, entry, seed, out, resume))
    if "epochs" not in study.budget:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, epochs=None))
    return cfg
