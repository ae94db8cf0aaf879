"""A finished study's best seed of each entry, released as that model's pretrained weights (`microdense study
release`).

The seed is chosen by validation top-1 among every seed the study planned, and only once all of them have finished:
the choice is made once, on complete evidence, and cannot drift as rows land. What is released, and how, is
`microdense.deploy.release.release_weights`; the row's command (the study run that made it) is the card's command.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from microdense.deploy.hub import write_hub_folder
from microdense.deploy.release import release_weights
from microdense.errors import ConfigError
from microdense.study.results import RESULTS_FILE, read_rows
from microdense.study.runner import STUDY_FILE

__all__ = ["BestSeed", "best_seeds", "release_best_seeds"]


@dataclass(frozen=True)
class BestSeed:
    label: str
    row: Dict[str, Any]  # the chosen run's row
    others: Dict[int, float]  # seed -> val top-1 of the runs it was chosen over (diverged runs are not among them)
    run_dir: Path


def best_seeds(folder: Path, labels: Optional[Sequence[str]] = None) -> List[BestSeed]:
    """The best-seed run of each entry named in `labels` (default: every entry of the study).

    Raises:
        FileNotFoundError: `folder` holds no study (study.yaml) or no results.
        ConfigError: an entry is unknown, or not every seed of it has finished.
    """
    if not (folder / STUDY_FILE).is_file():
        raise FileNotFoundError(f"{folder} holds no {STUDY_FILE}; give the folder `microdense study run --out` wrote")
    study = yaml.safe_load((folder / STUDY_FILE).read_text()) or {}
    seeds = sorted(study.get("seeds", []))
    known = [e["label"] for e in study.get("entries", [])]
    unknown = sorted(set(labels or ()) - set(known))
    if unknown:
        raise ConfigError(f"no entry {', '.join(unknown)} in {folder / STUDY_FILE}; its entries are {', '.join(known)}")
    rows = read_rows(folder / RESULTS_FILE)
    chosen = []
    for label in labels or known:
        done = {r["seed"]: r for r in rows if r["entry"] == label}
        missing = [s for s in seeds if s not in done]
        if missing:
            raise ConfigError(f"{label}: seed(s) {', '.join(map(str, missing))} of {seeds} have not finished; a best "
                             "seed is chosen once, after every seed has (`microdense study run` finishes them)")
        finite = [s for s in seeds if not done[s].get("diverged")]  # a diverged run has no accuracy to choose by
        if not finite:
            raise ConfigError(f"{label}: every seed diverged ({', '.join(map(str, seeds))}); there are no weights to "
                              "release")
        # NOTE: ties go to the lower seed, so the choice does not depend on the order rows landed in.
        best = max(finite, key=lambda s: (done[s]["val_top1"], -s))
        chosen.append(BestSeed(label, done[best], {s: done[s]["val_top1"] for s in finite if s != best},
                               folder / "runs" / done[best]["run"]))
    return chosen


def release_best_seeds(folder: Path, tag: str, labels: Optional[Sequence[str]] = None,
                       out_dir: Optional[Path] = None, data_note: Optional[str] = None,
                       hub: bool = False) -> List[Tuple[BestSeed, Path]]:
    """Release the best seed of each entry as `<model>.<tag>` (into `out_dir`, default the package's weights); returns
    each choice with the weights file it wrote. With `hub`, each is the folder `out_dir/<model>.<tag>` in the model
    hubs' layout instead (`microdense.deploy.hub`).

    Every entry's seeds are checked before anything is written, so an unfinished entry releases nothing.
    """
    chosen = best_seeds(folder, labels)
    if hub:
        if out_dir is None:
            raise ConfigError("a release in the hub layout needs an out_dir to hold its folders")
        targets = [Path(out_dir) / f"{c.row['model']}.{tag}" for c in chosen]
        for c, target in zip(chosen, targets):
            same = [o.label for o, t in zip(chosen, targets) if t == target and o is not c]
            if same:
                raise ConfigError(f"entries {c.label!r} and {same[0]!r} would both be released as {target.name}; "
                                  "release them one at a time (--entries) with a tag each")
            if target.exists():
                raise ConfigError(f"{target} exists already; remove it or choose another out_dir or tag")
        return [(c, write_hub_folder(str(c.run_dir), target, command=c.row.get("command"), data_note=data_note))
                for c, target in zip(chosen, targets)]
    return [(c, release_weights(c.run_dir, tag, out_dir=out_dir, command=c.row.get("command"), data_note=data_note))
            for c in chosen]
