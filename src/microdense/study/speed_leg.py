"""A study's speed leg: its entries, at the widths its runs had, as `microdense bench` specs.

The specs come from DIR/study.yaml, the study as it ran (params_like widths resolved), so the leg measures exactly
the nets the rows are of; `extra` specs (a baseline beside them) follow the entries.
"""
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

from microdense.errors import ConfigError
from microdense.study.decision import BenchLeg


def _value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def bench_specs(entries: List[Dict[str, Any]], leg: BenchLeg) -> List[Tuple[str, str]]:
    """(label, spec) for each entry of a study as it ran and each extra spec (labelled by itself), with the leg's
    run options: `model:key=value...:channels_last=true[:amp=bf16]`."""
    options = (["channels_last=true"] if leg.channels_last else []) + (["amp=bf16"] if leg.precision == "bf16" else [])
    labelled = [(e["label"], ":".join([e["model"], *(f"{k}={_value(v)}" for k, v in sorted(e["kwargs"].items()))]))
                for e in entries] + [(spec, spec) for spec in leg.extra]
    return [(label, ":".join([spec, *options])) for label, spec in labelled]


def study_as_run(folder: Path) -> Dict[str, Any]:
    """DIR/study.yaml, which `microdense study run` writes before its first run."""
    path = folder / "study.yaml"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: the speed leg measures the nets a study ran, so run the study into "
                         f"{folder} first (microdense study run NAME --out {folder})")
    return yaml.safe_load(path.read_text())
