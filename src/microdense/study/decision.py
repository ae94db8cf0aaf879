"""A study's decision rule as data: the `decision:` section of its file, applied by code to its rows.

Each kind is one rule with its thresholds as fields, written into the study before its first run:

    decision: {kind: paired_margin, floor: 0.3, claims: {residual: micro-dense aggregation}}
    decision: {kind: frontier, curve: [resnet20, resnet56, resnet110], judged: [tiny, small], floor: 0.3}

`parse_decision` refuses a rule that names no entry of its study; `decide(rows)` gives the decision's lines, from the
rows' val top-1 alone (a diverged run has none).
"""
import bisect
import json
import math
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from microdense.errors import ConfigError
from microdense.fields import check_fields, setting
from microdense.study.results import RESULTS_FILE, Spread, read_rows, spreads

FLOOR = 0.3  # points: the smallest difference two seeds are taken to resolve, whatever their spread
NO_VERDICT = "no verdict yet"  # how a line of a rule that waits says so (the claims table lists such lines)


def top1_by_seed(rows: Sequence[Dict[str, Any]]) -> Dict[Tuple[str, int], float]:
    """(entry label, seed) -> val top-1 in percent, for every finished run with an accuracy."""
    return {(r["entry"], r["seed"]): 100 * r["val_top1"] for r in rows if r.get("val_top1") is not None}


def not_yet(rows: Sequence[Dict[str, Any]], labels: Sequence[str]) -> str:
    """NO_VERDICT, naming the runs of `labels` that diverged: they hold a row, so no rerun will come on its
    own."""
    gone = [f"{r['entry']} seed {r['seed']}" for r in rows if r.get("val_top1") is None and r.get("entry") in labels]
    return NO_VERDICT + (f" ({', '.join(gone)} diverged)" if gone else "")


def margin_verdict(diffs: Sequence[float], floor: float) -> str:
    """Paired differences (positive: the claim's side is better) judged against max(their sample std, floor)."""
    m, bar = statistics.mean(diffs), max(statistics.stdev(diffs), floor)
    if all(x > 0 for x in diffs) and m > bar:
        return "SUPPORTED"
    if all(x < 0 for x in diffs) and -m > bar:
        return "CONTRADICTED"
    return "NOT SETTLED at this size"


@dataclass(frozen=True)
class Rule:
    """What every kind of rule has: where a rule first stated in a study's prose was moved into this data form,
    `encodes` names the commit whose prose it encodes (`microdense study decide` checks the rows were made under it)."""

    encodes: Optional[str] = None

    def decide(self, rows: Sequence[Dict[str, Any]], reference: str, folder: Optional[Path] = None,
               entries: Sequence[str] = ()) -> List[str]:
        """The rule's lines of `rows`: its verdicts, or why it waits. `entries`: the study's labels, for a rule that
        must see every entry's rows before it picks among them."""
        raise NotImplementedError


@dataclass(frozen=True)
class PairedMargin(Rule):
    """Each variant against the study's reference at the same seed: d_s = reference - variant. The claim a variant
    tests is SUPPORTED when every d_s > 0 and their mean exceeds max(their sample std, floor), CONTRADICTED in the
    mirror case, otherwise NOT SETTLED. A variant needs two seeds paired with the reference for a verdict."""

    claims: Dict[str, str] = setting(default_factory=dict)  # variant label -> the claim it tests
    floor: float = setting(FLOOR, ge=0)

    def labels(self) -> Tuple[str, ...]:
        return tuple(self.claims)

    def decide(self, rows: Sequence[Dict[str, Any]], reference: str, folder: Optional[Path] = None,
               entries: Sequence[str] = ()) -> List[str]:
        top1 = top1_by_seed(rows)
        lines = []
        for variant, claim in self.claims.items():
            seeds = sorted(s for entry, s in top1 if entry == variant and (reference, s) in top1)
            d = [top1[reference, s] - top1[variant, s] for s in seeds]
            if len(d) < 2:
                lines.append(f"{variant} ({claim}): {len(d)} seed(s) paired with the {reference}; "
                             f"{not_yet(rows, (variant, reference))}")
                continue
            lines.append(f"{variant} ({claim}): {reference} - {variant} by seed {' / '.join(f'{x:+.2f}' for x in d)}; "
                         f"mean {statistics.mean(d):+.2f}, sd {statistics.stdev(d):.2f}, bar max(sd, {self.floor}) = "
                         f"{max(statistics.stdev(d), self.floor):.2f} -> {margin_verdict(d, self.floor)}")
        return lines


def _interp(points: Sequence[Tuple[float, float]], x: float) -> float:
    """The piecewise-linear curve through `points` (sorted by x) at x, held at its nearest end outside them."""
    xs = [p[0] for p in points]
    if x <= xs[0]:
        return points[0][1]
    if x >= xs[-1]:
        return points[-1][1]
    i = bisect.bisect_right(xs, x)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def equivalent_size(points: Sequence[Tuple[float, float]], top1: float) -> Tuple[str, Optional[float]]:
    """Where the curve through (log params, top-1) `points` first reaches `top1`: ("at", params), or ("below",
    smallest params) when the smallest net already does better, or ("above", largest params) when no segment reaches
    it. Never extrapolated."""
    if top1 <= points[0][1]:
        return "below", math.exp(points[0][0])
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if y0 < top1 <= y1:
            return "at", math.exp(x0 + (x1 - x0) * (top1 - y0) / (y1 - y0))
    return "above", math.exp(points[-1][0])


def _size(p: float) -> str:
    return f"{p / 1e6:.2f}M"


@dataclass(frozen=True)
class Frontier(Rule):
    """The judged nets against the curve of another family, at equal epochs.

    The curve is the `curve` entries' mean val top-1, piecewise linear in log(parameters). Each judged net's
    ResNet-equivalent size is the smallest parameter count at which the curve reaches its mean val top-1 ("below"
    the curve's smallest net or "above" its largest when outside it, never extrapolated); its size ratio is that over
    its own parameters, its range from the per-seed curves. With margin = max(the net's sample std, floor), the net
    is SUPPORTED at its size when mean - margin lies above the curve at its own parameter count, CONTRADICTED when
    mean + margin lies below it, NOT SETTLED otherwise. Outside the curve's range the curve is held at its nearest
    end, never extrapolated."""

    curve: List[str] = setting(default_factory=list)  # the baseline family's labels
    judged: List[str] = setting(default_factory=list)  # the labels judged against it
    floor: float = setting(FLOOR, ge=0)

    def labels(self) -> Tuple[str, ...]:
        return tuple(self.curve) + tuple(self.judged)

    def decide(self, rows: Sequence[Dict[str, Any]], reference: str, folder: Optional[Path] = None,
               entries: Sequence[str] = ()) -> List[str]:
        top1 = top1_by_seed(rows)
        params = {r["entry"]: r["params"] for r in rows if r.get("params")}
        seeds = sorted({s for _, s in top1})
        complete = [s for s in seeds if all((c, s) in top1 for c in self.curve)]
        if len(complete) < 2 or any(c not in params for c in self.curve):
            return [f"the curve ({', '.join(self.curve)}) has {len(complete)} complete seed(s); "
                    f"{not_yet(rows, self.curve)}"]

        def points(values: Dict[str, float]) -> List[Tuple[float, float]]:
            return sorted((math.log(params[c]), values[c]) for c in self.curve)

        mean_curve = points({c: statistics.mean(top1[c, s] for s in complete) for c in self.curve})
        lines = ["curve: " + ", ".join(f"{c} {_size(params[c])} {statistics.mean(top1[c, s] for s in complete):.2f}"
                                       for c in sorted(self.curve, key=params.get))
                 + f" (mean val top-1 over seeds {', '.join(map(str, complete))})"]
        for net in self.judged:
            own = [s for s in complete if (net, s) in top1]
            if len(own) < 2:
                lines.append(f"{net}: {len(own)} seed(s) beside a complete curve; {not_yet(rows, [net])}")
                continue
            values = [top1[net, s] for s in own]
            mean, sd = statistics.mean(values), statistics.stdev(values)
            bar = max(sd, self.floor)
            at_own = _interp(mean_curve, math.log(params[net]))
            if mean - bar > at_own:
                verdict = "SUPPORTED at this size"
            elif mean + bar < at_own:
                verdict = "CONTRADICTED at this size"
            else:
                verdict = "NOT SETTLED at this size"
            ratio = self._ratio(mean_curve, mean, params[net])
            per_seed = [self._ratio(points({c: top1[c, s] for c in self.curve}), top1[net, s], params[net])
                        for s in own]
            lines.append(f"{net} ({_size(params[net])}): mean {mean:.2f}, sd {sd:.2f}, margin max(sd, {self.floor}) = "
                         f"{bar:.2f}; curve at its size {at_own:.2f}; equivalent size {ratio}; by seed "
                         f"{' / '.join(per_seed)} -> {verdict}")
        return lines

    @staticmethod
    def _ratio(points: Sequence[Tuple[float, float]], top1: float, own: float) -> str:
        where, size = equivalent_size(points, top1)
        if where == "at":
            return f"{_size(size)} ({size / own:.2f}x)"
        return f"{where} {_size(size)} ({'<' if where == 'below' else '>'}{size / own:.2f}x)"


@dataclass(frozen=True)
class TimeLeg(Rule):
    """What the rules that go on to equal time share: the equal-time companion study (its rows in the folder of that
    name beside this study's) and the speed leg's json in this study's folder, with each entry's spec in it."""

    time_leg: str = ""
    bench_file: str = "bench.json"
    # label -> its spec in bench_file, for a speed leg measured before `study bench` labelled its rows
    bench_specs: Dict[str, str] = setting(default_factory=dict)
    floor: float = setting(FLOOR, ge=0)

    def labels(self) -> Tuple[str, ...]:
        return tuple(self.bench_specs)

    def _timed(self, folder: Path) -> Tuple[Dict[str, Spread], str]:
        """label -> its equal-time val top-1 over seeds, and the leg's minutes as its study ran."""
        companion = folder.parent / self.time_leg
        study = companion / "study.yaml"
        minutes = yaml.safe_load(study.read_text())["budget"]["time_budget"] if study.is_file() else "?"
        return spreads(top1_by_seed(read_rows(companion / RESULTS_FILE))), f"{minutes} minutes"

    @staticmethod
    def _time_leg_short(timed: Dict[str, Spread], labels: Sequence[str]) -> Optional[str]:
        """Why the equal-time leg cannot decide among `labels` yet (one has fewer than 2 seeds there), or None."""
        short = [k for k in labels if k not in timed or timed[k].runs < 2]
        return f"equal time incomplete ({', '.join(short)} have fewer than 2 seeds): no decision yet" if short else None

    def _rates(self, folder: Path) -> Dict[str, float]:
        """label -> training img/s: by the label `microdense study bench` gives each row, or for a speed leg measured
        before it did, by `bench_specs`."""
        results = json.loads((folder / self.bench_file).read_text())["results"]
        if self.bench_specs:
            rates = {r["model"]: r["train_img_s"] for r in results}
            return {label: rates[spec] for label, spec in self.bench_specs.items() if rates.get(spec) is not None}
        return {r["label"]: r["train_img_s"] for r in results if "label" in r and r["train_img_s"] is not None}


@dataclass(frozen=True)
class PairedThenTime(TimeLeg):
    """One candidate against the reference. (1) Per epoch, with d_s = candidate - reference at seed s, the candidate
    is eligible when mean(d) >= -max(sd(d), floor); otherwise the reference stays. (2) At equal time an eligible
    candidate wins when its mean val top-1 exceeds the reference's by more than floor, and loses when it trails by
    more; (3) within floor the faster in the speed leg wins. `names`: what the outcome calls each of the two."""

    candidate: str = ""
    names: Dict[str, str] = setting(default_factory=dict)

    def labels(self) -> Tuple[str, ...]:
        return (self.candidate, *self.names, *self.bench_specs)

    def decide(self, rows: Sequence[Dict[str, Any]], reference: str, folder: Optional[Path] = None,
               entries: Sequence[str] = ()) -> List[str]:
        cand, ref = self.candidate, reference
        stays, wins = f"{self.names[ref]} stays", f"{self.names[cand]} becomes the default"
        top1 = top1_by_seed(rows)
        seeds = sorted(s for (label, s) in top1 if label == cand and (ref, s) in top1)
        if len(seeds) < 2:
            return [f"equal epochs incomplete (seeds with both entries: {seeds}): no decision yet"]
        d = [top1[cand, s] - top1[ref, s] for s in seeds]
        m, sd = statistics.mean(d), statistics.stdev(d)
        margin = max(sd, self.floor)
        lines = [f"(1) equal epochs: {cand} - {ref} by seed {' / '.join(f'{x:+.2f}' for x in d)}; mean {m:+.2f}, "
                 f"sd {sd:.2f}; eligible when mean >= -{margin:.2f}"]
        if m < -margin:
            return lines + [f"outcome: {stays} ({self.names[cand]} is worse per epoch than two seeds can resolve)"]
        timed, minutes = self._timed(folder)
        waiting = self._time_leg_short(timed, (ref, cand))
        if waiting:
            return lines + [waiting]
        t_ref, t_cand = timed[ref].mean, timed[cand].mean
        lines.append(f"(2) {minutes}: {ref} {t_ref:.2f}, {cand} {t_cand:.2f} ({cand} - {ref} {t_cand - t_ref:+.2f}; "
                     f"decides beyond ±{self.floor})")
        if t_cand - t_ref > self.floor:
            return lines + [f"outcome: {wins}"]
        if t_ref - t_cand > self.floor:
            return lines + [f"outcome: {stays} ({self.names[cand]} trails at equal time)"]
        rates = self._rates(folder)
        if ref not in rates or cand not in rates:
            return lines + [f"the speed leg lacks {ref if ref not in rates else cand}: no decision yet"]
        lines.append(f"(3) bench, fp32 channels_last: {ref} {rates[ref]:.1f}, {cand} {rates[cand]:.1f} img/s")
        return lines + ["outcome: " + (wins if rates[cand] > rates[ref] else stays)]


@dataclass(frozen=True)
class EligibleThenTime(TimeLeg):
    """Many entries, one winner. (1) At equal epochs an entry is eligible when its mean val top-1 is within
    max(its sample std, the best entry's sample std, floor) of the best entry's mean; (2) among eligible entries the
    best mean equal-time val top-1 wins; (3) entries within floor of it on (2) are split by training img/s in the
    speed leg."""

    def decide(self, rows: Sequence[Dict[str, Any]], reference: str, folder: Optional[Path] = None,
               entries: Sequence[str] = ()) -> List[str]:
        epochs = spreads(top1_by_seed(rows))
        # an entry with no row, or only diverged ones, must not drop out of the choice unseen
        labels = dict.fromkeys([*entries, *(r["entry"] for r in rows)])
        short = [k for k in labels if k not in epochs or epochs[k].runs < 2]
        if short:
            return [f"equal epochs incomplete ({', '.join(short)} have fewer than 2 seeds): no decision yet"]
        best = max(epochs, key=lambda k: epochs[k].mean)
        top = epochs[best]
        lines = [f"(1) equal epochs: best {best} {top.mean:.2f} ± {top.sd:.2f} ({top.runs} runs)"]
        eligible = []
        for label, e in sorted(epochs.items(), key=lambda kv: -kv[1].mean):
            margin = max(e.sd, top.sd, self.floor)
            ok = top.mean - e.mean <= margin
            eligible += [label] if ok else []
            lines.append(f"    {label:10s} {e.mean:6.2f} ± {e.sd:4.2f} ({e.runs} runs): {top.mean - e.mean:5.2f} "
                         f"behind, margin {margin:.2f} -> {'eligible' if ok else 'out'}")
        if len(eligible) == 1:
            return lines + [f"winner: {eligible[0]}, the only eligible entry: steps (2) and (3) choose among eligible "
                            "entries, so no equal-time or bench result can change it"]
        timed, minutes = self._timed(folder)
        waiting = self._time_leg_short(timed, eligible)
        if waiting:
            return lines + [waiting]
        ranked = sorted(eligible, key=lambda k: -timed[k].mean)
        lines.append(f"(2) {minutes}: " + "; ".join(
            f"{k} {timed[k].mean:.2f} ± {timed[k].sd:.2f} ({timed[k].runs} runs)" for k in ranked))
        rates = self._rates(folder)
        tied = [k for k in ranked if timed[ranked[0]].mean - timed[k].mean <= self.floor]
        unmeasured = [k for k in tied if k not in rates] if len(tied) > 1 else []
        if unmeasured:
            return lines + [f"the speed leg lacks {', '.join(unmeasured)}: no decision yet"]
        winner = max(tied, key=lambda k: rates[k])
        if len(tied) > 1:
            lines.append(f"(3) within {self.floor} points: " + ", ".join(f"{k} {rates[k]:.1f} img/s" for k in tied))
        return lines + [f"winner: {winner}"]


RULES = {"paired_margin": PairedMargin, "frontier": Frontier, "paired_then_time": PairedThenTime,
         "eligible_then_time": EligibleThenTime}


def parse_decision(raw: Any, where: str, labels: Sequence[str]) -> Optional[Any]:
    """The rule a study's `decision:` section states, checked against its entries' labels; None when it has none."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("kind") not in RULES:
        raise ConfigError(f"{where}: decision must be a mapping with a kind, one of {', '.join(RULES)}; got {raw!r}")
    kind = RULES[raw["kind"]]
    values = {k: v for k, v in raw.items() if k != "kind"}
    allowed = [f.name for f in fields(kind)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: decision kind {raw['kind']} has no field(s) {unknown}; its fields are "
                         f"{', '.join(allowed)}")
    rule = kind(**values)
    check_fields(rule)
    missing = [label for label in rule.labels() if label not in labels]
    if missing:
        raise ConfigError(f"{where}: decision names {missing}, which are no entry's labels; labels are "
                         f"{', '.join(labels)}")
    return rule


@dataclass(frozen=True)
class BenchLeg:
    """A study's speed leg: its entries (at the widths the study resolved) and `extra` bench specs, trained side by
    side by `microdense bench`, alone on the machine."""

    batch_size: int = setting(128, ge=1)
    precision: str = setting("fp32", choices=("fp32", "bf16"))
    channels_last: bool = True
    rounds: int = setting(3, ge=1)
    steps: int = setting(10, ge=1)
    warmup: int = setting(3, ge=0)
    extra: List[str] = setting(default_factory=list)  # bench specs measured beside the entries


def parse_bench(raw: Any, where: str) -> Optional[BenchLeg]:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: bench must be a mapping of {', '.join(f.name for f in fields(BenchLeg))}")
    unknown = sorted(set(raw) - {f.name for f in fields(BenchLeg)})
    if unknown:
        raise ConfigError(f"{where}: bench has no field(s) {unknown}; its fields are "
                         f"{', '.join(f.name for f in fields(BenchLeg))}")
    leg = BenchLeg(**raw)
    check_fields(leg)
    return leg


def as_data(section: Optional[Any]) -> Optional[Dict[str, Any]]:
    """A parsed `decision:` or `bench:` section as the mapping its file states (DIR/study.yaml repeats it)."""
    if section is None:
        return None
    kind = {rule: name for name, rule in RULES.items()}.get(type(section))
    return {**({"kind": kind} if kind else {}), **asdict(section)}


def same_rule(a: Optional[Rule], b: Optional[Rule]) -> bool:
    """Whether two rules judge alike: the same kind and thresholds, wherever each was moved from (`encodes`)."""
    def judged(rule: Optional[Rule]) -> Optional[Dict[str, Any]]:
        data = as_data(rule)
        return data and {k: v for k, v in data.items() if k != "encodes"}
    return judged(a) == judged(b)
