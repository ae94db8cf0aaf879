"""`microdense study run`: every (entry, seed) of a study through `microdense train`'s own code path.

DIR/runs/<label>-seed<k>/ holds each run's folder; DIR/results.jsonl gets one row per finished run. A run with a
row is skipped, a run with a last.ckpt resumes from it, so a killed study continues where it stopped. `--shard I/N`
runs the runs whose index is I modulo N: a job array spreads a study over machines with no coordinator.

Every check happens before the first run starts: the study's fields, its models, each params_like width, each
run's training configuration, and that rows and run folders already in DIR came from the same configuration.
"""
import dataclasses
import fcntl
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import yaml

from microdense.data.config import DataCfg
from microdense.data.sources import class_count
from microdense.errors import ConfigError, MicrodenseError, TrainingDiverged
from microdense.io import atomic_write_text
from microdense.models import check_model_name
from microdense.provenance import code_state, file_state, provenance, source_root
from microdense.saved.run_folder import CONFIG_FILE, last_checkpoint
from microdense.saved.weights_source import start_source
from microdense.study.decision import as_data
from microdense.study.results import RESULTS_FILE, append_row, read_rows
from microdense.study.spec import Entry, PlannedRun, Study, plan, run_train_config
from microdense.study.width import match_params, param_count
from microdense.train.config import TrainConfig, peak_lr, resolve_config
from microdense.train.run import train

log = logging.getLogger(__name__)
STUDY_FILE = "study.yaml"
# NOTE: where a run happens, not what it is: left out of the fingerprint so shards on other machines match.
PLACE_FIELDS = ("run.out", "run.resume", "run.restart", "run.devices", "run.num_nodes", "run.accelerator", "data.root",
                "data.workers", "data.download")


@dataclass(frozen=True)
class ResolvedEntry:
    entry: Entry
    kwargs: Dict[str, Any]  # the entry's kwargs, with the width knob params_like chose
    params: int


@dataclass
class StudyRun:
    """What a study run did: how many runs it ran and skipped in this shard."""

    ran: int
    skipped: int
    planned: int


def _data_classes(study: Study) -> int:
    """Classifier outputs of the study's runs, known before any image is read (params_like compares whole nets)."""
    num_classes = study.overrides.get("model", {}).get("num_classes")
    if num_classes:
        return int(num_classes)
    return class_count(study.data.get("name", "synthetic"), study.data.get("root"))


def resolve_entries(study: Study, num_classes: int) -> Dict[str, ResolvedEntry]:
    """Each entry's final kwargs: params_like entries matched to their reference's parameter count (whole nets with
    `num_classes` outputs)."""
    for e in study.entries:
        check_model_name(e.model)
    resolved: Dict[str, ResolvedEntry] = {}
    pending = list(study.entries)
    while pending:  # an entry may be params_like another params_like entry: resolve in dependency order
        ready = [e for e in pending if e.params_like is None or e.params_like in resolved]
        if not ready:
            raise ConfigError(f"study {study.name}: params_like forms a cycle among {[e.label for e in pending]}")
        for e in ready:
            kwargs = {**e.kwargs, "num_classes": num_classes}
            if e.params_like is None:
                params = param_count(e.model, kwargs)
            else:
                try:
                    match = match_params(e.model, kwargs, resolved[e.params_like].params)
                except MicrodenseError as err:
                    raise ConfigError(f"study {study.name}, entry {e.label!r} ({e.params_like!r}'s size): "
                                      f"{err}") from None
                kwargs, params = match.kwargs, match.params
            kwargs.pop("num_classes")
            resolved[e.label] = ResolvedEntry(e, kwargs, params)
            pending.remove(e)
    return resolved


def fingerprint(cfg: TrainConfig) -> str:
    """A short hash of what a run is (model, data, recipe, budget, seed), not of where it runs."""
    values = dataclasses.asdict(cfg)
    for name in PLACE_FIELDS:
        section, field = name.split(".")
        values[section].pop(field)
    # NOTE: the learning rate as one device takes it: a rate stated per reference batch (lr_base_size) and the same
    # rate stated for the run's batch are one run (how many devices scale it is where the run happens)
    for field in ("lr_base_size", "lr_scale"):
        values["optim"].pop(field)
    values["optim"]["lr"] = peak_lr(cfg.optim, cfg.data.batch_size)
    # NOTE: img_size left to the model hashes as its old default did: committed rows (CIFAR, whose small images never
    # read it) keep matching their runs
    values["data"]["img_size"] = cfg.data.img_size or 224
    return hashlib.sha256(yaml.safe_dump(values, sort_keys=True).encode()).hexdigest()[:12]


def _saved_config_is(run_dir: Path, cfg: TrainConfig) -> bool:
    """Whether the run folder's saved config, read as `train --resume` reads it (a field added since at its default,
    the behaviour the run had), is `cfg`."""
    saved = run_dir / CONFIG_FILE
    return saved.exists() and fingerprint(resolve_config({}, str(saved))) == fingerprint(cfg)


def _made_under(row: Dict[str, Any], run_dir: Path, cfg: TrainConfig) -> bool:
    """Whether a finished run's row was made under `cfg`. Its hash says so; but a row written before a training
    field was added hashed fewer fields, so where they differ the run folder's saved config decides."""
    return row.get("config_sha") == fingerprint(cfg) or _saved_config_is(run_dir, cfg)


def _study_text(study: Study, entries: Dict[str, ResolvedEntry]) -> str:
    """DIR/study.yaml: the study as run, params_like widths resolved into each entry's kwargs: itself a study that
    repeats these runs exactly. The report reads it for the claim, the reference and the order of the entries."""
    data = dict(name=study.name, claim=study.claim, description=study.description, data=study.data,
                recipe=study.recipe, overrides=study.overrides, budget=study.budget, seeds=list(study.seeds),
                reference=study.reference,
                entries=[dict(label=r.entry.label, model=r.entry.model, kwargs=r.kwargs,
                              **({"overrides": r.entry.overrides} if r.entry.overrides else {}))
                         for r in (entries[e.label] for e in study.entries)],
                **{name: as_data(getattr(study, name)) for name in ("decision", "bench") if getattr(study, name)})
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _set_aside(run_dir: Path) -> Path:
    """A run folder with no checkpoint to resume from (killed before its first save): moved beside, not deleted."""
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.incomplete-{n}")).exists():
        n += 1
    run_dir.rename(aside)
    return aside


def _lock(path: Path) -> Optional[int]:
    """An exclusive lock on the file `path`, or None if another process holds it. The kernel drops it when its
    process ends, however it ends (a SIGKILL included), so no stale lock outlives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _claim(run_dir: Path) -> Optional[int]:
    """The lock on one run, held until its row is written; None if another process holds it (a shard of another
    split of the study sharing DIR, or a requeued job whose first attempt still runs)."""
    return _lock(run_dir.parent / f".{run_dir.name}.lock")


def _check_folder(run: PlannedRun, run_dir: Path, cfg: TrainConfig) -> None:
    if last_checkpoint(run_dir).exists() and (run_dir / CONFIG_FILE).exists():
        if not _saved_config_is(run_dir, cfg):
            raise ConfigError(f"{run_dir} was started with another configuration than the study now gives run "
                             f"{run.name}; move that folder away, or run the study into another --out")


def _train_run(study: Study, r: PlannedRun, entry: ResolvedEntry, cfg: TrainConfig, test_dir: Optional[str],
               progress: bool, command: Optional[str]) -> Dict[str, Any]:
    """Train (or resume) one run of the study through `microdense train`'s code path; returns its results row. A run
    that diverges gets a row too, which records where and how, and no accuracy."""
    run_dir = Path(cfg.run.out)
    resume = last_checkpoint(run_dir).exists()
    if not resume and run_dir.exists():
        log.warning("%s has no checkpoint to resume from; set aside as %s", run_dir, _set_aside(run_dir))
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, resume=resume))
    row: Dict[str, Any] = dict(
        study=study.name, entry=r.entry.label, model=r.entry.model, kwargs=entry.kwargs, overrides=r.entry.overrides,
        params_like=r.entry.params_like, seed=r.seed, budget=study.budget, recipe=study.recipe)
    try:
        result = train(cfg, progress=progress)
    except TrainingDiverged as e:
        log.warning("study %s: %s diverged: %s", study.name, r.name, e)
        row.update(params=entry.params, macs=None, val_top1=None, val_top5=None, val_loss=None,
                   diverged=dict(step=e.step, loss=str(e.loss), lr=e.lr, message=str(e)))
        result = None
    if result is not None:
        row.update(
            params=result.params, macs=result.macs, epochs=round(result.epochs, 4), steps=result.steps,
            train_seconds=round(result.train_seconds, 2), seconds=round(result.seconds, 2),
            resumed_at_step=result.resumed_at_step,  # then `seconds` is the last process's wall time only
            img_s=None if result.train_img_s is None else round(result.train_img_s, 2),
            val_top1=result.val_top1, val_top5=result.val_top5, val_loss=result.val_loss)
        if test_dir is not None:
            from microdense.train.evaluate import evaluate
            test = evaluate(str(run_dir), DataCfg(name="imagefolder", root=test_dir, batch_size=256,
                                                  workers=cfg.data.workers), accelerator=cfg.run.accelerator)
            row.update(test_top1=test.top1, test_top5=test.top5, test_images=test.images)
    row.update(run=r.name, config_sha=fingerprint(cfg), precision=cfg.run.precision,
               study_file=file_state(Path(study.path)) if study.path else None,
               provenance=result.provenance if result is not None else provenance(), command=command,
               finished=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    return row


def run_study(study: Study, out: Path, shard: Tuple[int, int] = (0, 1), test_dir: Optional[str] = None,
              progress: bool = True, command: Optional[str] = None, allow_dirty: bool = False,
              announce: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> StudyRun:
    """Run this shard's share of `study` into `out`; returns what it ran. Refuses bad input before any run.

    `command`: the command line that asked for it, recorded in every row. `allow_dirty`: run even though the package's
    sources differ from their commit (each row records it); otherwise that is refused, since no commit could repeat
    the rows. `announce` gets one progress line per run.
    """
    if not allow_dirty and code_state()["dirty"]:
        raise ConfigError(f"the microdense sources at {source_root()} have uncommitted changes, so no commit would "
                         "repeat this study's rows; commit them, or allow it (allow_dirty) and the rows say so")
    entries = resolve_entries(study, _data_classes(study))
    runs = plan(study)
    configs = {r.name: run_train_config(study, entries[r.entry.label].kwargs, r.entry, r.seed,
                                        out / "runs" / r.name) for r in runs}
    for cfg in configs.values():  # the weights any run starts from, found before the first run
        start_source(cfg.model)
    if test_dir is not None and not Path(test_dir).is_dir():
        raise FileNotFoundError(f"test folder {test_dir} does not exist; give an ImageFolder tree to --test-dir")
    results = out / RESULTS_FILE
    done = {row.get("run"): row for row in read_rows(results)}
    for r in runs:
        row = done.get(r.name)
        if row is not None and not _made_under(row, out / "runs" / r.name, configs[r.name]):
            raise ConfigError(f"{results} holds run {r.name} from another configuration of the study; run the study "
                             "into another --out")
    index, count = shard
    shard_lock = _lock(out / f".shard-{index}-of-{count}.lock")
    if shard_lock is None:
        raise BlockingIOError(f"study {study.name}: shard {index}/{count} is already running into {out} in another "
                              "process; let it finish, or run another shard")
    try:
        # NOTE: the rows are read again under the lock: a process that held it may have finished runs since.
        done = {row.get("run"): row for row in read_rows(results)}
        mine = [r for r in runs if r.index % count == index]
        todo = [r for r in mine if r.name not in done]
        for r in todo:
            _check_folder(r, out / "runs" / r.name, configs[r.name])
        atomic_write_text(out / STUDY_FILE, _study_text(study, entries))
        started, finished = time.perf_counter(), 0
        for i, r in enumerate(todo):
            eta = ""
            if finished:
                left = (time.perf_counter() - started) / finished * (len(todo) - i)
                eta = f", {'shard' if count > 1 else 'study'} ETA {left / 60:.0f} min"
            announce(f"study {study.name}: run {i + 1}/{len(todo)} of this shard ({len(mine) - len(todo)} done "
                     f"before; {len(runs)} in the study): {r.entry.label}, seed {r.seed}{eta}")
            run_dir = out / "runs" / r.name
            lock = _claim(run_dir)
            if lock is None:
                announce(f"study {study.name}: {r.name} is running in another process; left to it")
                continue
            try:
                if any(row.get("run") == r.name for row in read_rows(results)):  # a twin finished it since we planned
                    announce(f"study {study.name}: {r.name} was finished by another process")
                    continue
                append_row(results, _train_run(study, r, entries[r.entry.label], configs[r.name], test_dir,
                                               progress, command))
            finally:
                os.close(lock)  # however the run ended: a failed run must not hold its lock until the process ends
            finished += 1
        return StudyRun(ran=finished, skipped=len(mine) - len(todo), planned=len(runs))
    finally:
        os.close(shard_lock)
