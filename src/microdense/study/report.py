"""`microdense study report DIR`: results.jsonl summarised per entry, as report.md, report.png and a table.

One row per entry: parameters, MACs, runs, mean ± sample standard deviation of val top-1 (and test top-1 where
runs were tested) over seeds, the difference of the means from the reference entry, training images per second
and training minutes. The plot draws top-1 against parameters and against training time, with error bars over
seeds; for runs of two epochs or more, curves.png draws every run's val top-1 epoch by epoch, so a ranking that
flips during training shows.
"""
import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from microdense.io import atomic_write_text
from microdense.plots import pyplot, save_png
from microdense.saved.run_folder import METRICS_FILE, read_metrics
from microdense.study.results import RESULTS_FILE, read_rows, spread
from microdense.study.runner import STUDY_FILE


@dataclass
class EntrySummary:
    label: str
    model: str
    params: int
    macs: int
    runs: int  # finished runs, each with an accuracy
    seeds: List[int]  # their seeds
    val: List[float]  # val top-1 of each finished run, percent
    test: List[float]  # test top-1 of each run that was tested, percent
    img_s: float
    train_minutes: float
    diverged: List[int] = dataclasses.field(default_factory=list)  # seeds whose runs diverged: no accuracy


@dataclass
class Report:
    markdown: Path
    plot: Path
    table: Any  # a rich Table
    curves: Optional[Path] = None  # every run's val top-1 per epoch; None when no run has two epochs


def _pm(values: Sequence[float]) -> str:
    if not values:
        return "-"
    top1 = spread(values)
    return f"{top1.mean:.2f}" if top1.runs == 1 else f"{top1.mean:.2f} ± {top1.sd:.2f}"


def summarise(rows: List[Dict[str, Any]], order: Sequence[str]) -> List[EntrySummary]:
    """Rows grouped by entry, in `order` (then any other entries as they first appear)."""
    labels = [label for label in order if any(r["entry"] == label for r in rows)]
    for r in rows:
        if r["entry"] not in labels:
            labels.append(r["entry"])
    out = []
    for label in labels:
        everyone = sorted((r for r in rows if r["entry"] == label), key=lambda r: r["seed"])
        group = [r for r in everyone if not r.get("diverged")]  # a finished run always validated its final weights
        sized = (group or everyone)[0]
        out.append(EntrySummary(
            label=label, model=sized["model"], params=sized["params"], macs=sized.get("macs"), runs=len(group),
            seeds=[r["seed"] for r in group], val=[100 * r["val_top1"] for r in group],
            test=[100 * r["test_top1"] for r in group if r.get("test_top1") is not None],
            img_s=statistics.fmean(r["img_s"] for r in group if r.get("img_s")) if any(
                r.get("img_s") for r in group) else 0.0,
            train_minutes=statistics.fmean(r["train_seconds"] for r in group) / 60 if group else 0.0,
            diverged=[r["seed"] for r in everyone if r.get("diverged")]))
    return out


def _delta(entry: EntrySummary, ref: Optional[EntrySummary], attr: str) -> str:
    mine, theirs = getattr(entry, attr), getattr(ref, attr) if ref else []
    if not mine or not theirs or entry is ref:
        return "-"
    return f"{spread(mine).mean - spread(theirs).mean:+.2f}"


def _paired(entry: EntrySummary, ref: Optional[EntrySummary]) -> str:
    """Val top-1 minus the reference's at each seed both ran: the same held-out images and data order, so these
    differences are free of the split's own variation."""
    if ref is None or entry is ref:
        return "-"
    theirs = dict(zip(ref.seeds, ref.val))
    pairs = [v - theirs[seed] for seed, v in zip(entry.seeds, entry.val) if seed in theirs]
    return " / ".join(f"{d:+.2f}" for d in pairs) or "-"


def _columns(has_test: bool) -> List[str]:
    cols = ["entry", "model", "params", "MACs", "runs", "val top-1 %", "by seed", "Δ val", "Δ by seed"]
    if has_test:
        cols += ["test top-1 %", "Δ test"]
    return cols + ["img/s", "train min"]


def _by_seed(s: EntrySummary) -> str:
    """Each run's val top-1 in seed order, a diverged run named as such."""
    by_seed = {**dict(zip(s.seeds, (f"{v:.2f}" for v in s.val))), **{seed: "diverged" for seed in s.diverged}}
    return " / ".join(by_seed[seed] for seed in sorted(by_seed)) or "-"


def _cells(s: EntrySummary, ref: Optional[EntrySummary], has_test: bool) -> List[str]:
    runs = str(s.runs) + (f" (+{len(s.diverged)} diverged)" if s.diverged else "")
    macs = "-" if s.macs is None else f"{s.macs / 1e6:.1f}M"
    cells = [s.label, s.model, f"{s.params / 1e6:.3f}M", macs, runs, _pm(s.val), _by_seed(s), _delta(s, ref, "val"),
             _paired(s, ref)]
    if has_test:
        cells += [_pm(s.test), _delta(s, ref, "test")]
    return cells + [f"{s.img_s:.0f}", f"{s.train_minutes:.1f}"]


def _standing(ref: EntrySummary, summaries: List[EntrySummary]) -> str:
    """Which entries the reference's mean val top-1 beats and trails, with their sizes against its own (C3's
    question: how much smaller is it than the nets it beats?)."""
    def listed(group: List[EntrySummary]) -> str:
        return ", ".join(f"{s.label} ({s.params / ref.params:.1f}× its params)" for s in group) or "none"

    mean = spread(ref.val).mean
    others = [s for s in summaries if s is not ref and s.val]
    beaten = sorted((s for s in others if spread(s.val).mean < mean), key=lambda s: -s.params)
    ahead = sorted((s for s in others if spread(s.val).mean >= mean), key=lambda s: s.params)
    return (f"By mean val top-1, `{ref.label}` is ahead of: {listed(beaten)}; behind: {listed(ahead)}. "
            "A difference smaller than the seeds' spread is not a ranking.")


def plot_report(path: Path, summaries: List[EntrySummary], title: str) -> None:
    """Top-1 against parameters, and against training minutes, with error bars (sample std over seeds)."""
    plt = pyplot()
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, xlabel, x_of in ((axes[0], "parameters (M)", lambda s: s.params / 1e6),
                             (axes[1], "training time per run (min)", lambda s: s.train_minutes)):
        for s in summaries:
            for values, marker, split in ((s.val, "o", "val"), (s.test, "s", "test")):
                if not values:
                    continue
                top1 = spread(values)
                ax.errorbar(x_of(s), top1.mean, yerr=top1.sd, fmt=marker, capsize=3,
                            color=f"C{summaries.index(s) % 10}", label=f"{s.label} ({split})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    sizes = [s.params for s in summaries]
    if max(sizes) > 3 * min(sizes):  # a log axis for a range of sizes; equal-size studies keep a plain one
        axes[0].set_xscale("log")
        axes[0].xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        axes[0].ticklabel_format(axis="x", style="plain", useOffset=False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    save_png(fig, path)


def epoch_curves(folder: Path, rows: List[Dict[str, Any]]) -> Dict[str, List[tuple]]:
    """Each run's (epoch, val top-1 %) from its metrics.csv, by run name; runs with fewer than two epochs left out."""
    curves = {}
    for r in rows:
        points = [(float(m["epoch"]), 100 * float(m["val_top1"]))
                  for m in read_metrics(folder / "runs" / r["run"] / METRICS_FILE) if m.get("val_top1")]
        if len(points) >= 2:
            curves[r["run"]] = points
    return curves


def plot_study_curves(path: Path, rows: List[Dict[str, Any]], curves: Dict[str, List[tuple]], order: Sequence[str],
                title: str) -> None:
    """Val top-1 against epochs, one line per run: a colour per entry (in `order`, which holds every entry of
    `rows`), a line style per seed."""
    plt = pyplot()
    import matplotlib.ticker

    styles = ("-", "--", ":", "-.")
    seeds = sorted({r["seed"] for r in rows})
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for r in sorted(rows, key=lambda r: (order.index(r["entry"]), r["seed"])):
        if r["run"] not in curves:
            continue
        epochs, top1 = zip(*curves[r["run"]])
        ax.plot(epochs, top1, styles[seeds.index(r["seed"]) % len(styles)], color=f"C{order.index(r['entry']) % 10}",
                label=f"{r['entry']} seed {r['seed']}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("val top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


def _machines(rows: List[Dict[str, Any]]) -> List[str]:
    seen = []
    for r in rows:
        made = r.get("provenance") or {}
        m = made.get("machine") or r.get("machine") or {}  # rows before provenance kept `machine` alone
        threads = m.get("threads", m.get("torch_threads"))
        torch_version = (made.get("versions") or {}).get("torch") or m.get("torch")
        isa = f", oneDNN {m['isa']}" if m.get("isa") else ""
        text = f"{m.get('gpu') or m.get('cpu')}{isa}, {m.get('cores')} cores, {threads} torch " \
               f"thread{'' if threads == 1 else 's'} per run, torch {torch_version}"
        if text not in seen:
            seen.append(text)
    return seen


def _provenance_text(rows: List[Dict[str, Any]]) -> str:
    """Which commits made the rows (and whether any from uncommitted sources), the libraries, and the data read."""
    made = [r["provenance"] for r in rows if r.get("provenance")]
    parts = []
    commits = sorted({(p["code"].get("commit") or "no git checkout")[:10] + (" (uncommitted changes)"
                                                                            if p["code"].get("dirty") else "")
                      for p in made})
    if commits:
        parts.append("commit(s) " + ", ".join(f"`{c}`" for c in commits))
    versions = sorted({", ".join(f"{k} {v}" for k, v in p["versions"].items()) for p in made})
    parts += versions
    data = sorted({f"{p['data']['name']}: {p['data']['images']} images, sha256 {p['data']['sha256'][:12]} of its "
                   f"{p['data']['hashed']}" for p in made if p.get("data")})
    parts += data
    if len(made) < len(rows):
        parts.append(f"{len(rows) - len(made)} row(s) predate these records and name neither commit nor data")
    return "; ".join(parts)


def _data_text(data: Dict[str, Any]) -> str:
    split = data.get("val_split")
    held = f", {split:.0%} of its training images held out for validation (drawn by each run's seed)" if split \
        else ", its own validation split"
    where = f" at `{data['root']}`" if data.get("root") else ""
    return f"{data.get('name', 'synthetic')}{where}{held}"


def write_report(folder: Path) -> Report:
    """Write DIR/report.md and DIR/report.png from DIR/results.jsonl; returns their paths and the table."""
    from rich.table import Table

    rows = read_rows(folder / RESULTS_FILE)
    if not rows:
        raise FileNotFoundError(f"no results in {folder / RESULTS_FILE}; run the study into {folder} first")
    study: Dict[str, Any] = {}
    if (folder / STUDY_FILE).exists():
        study = yaml.safe_load((folder / STUDY_FILE).read_text()) or {}
    order = [e["label"] for e in study.get("entries", [])]
    summaries = summarise(rows, order)
    reference = study.get("reference", order[0] if order else summaries[0].label)
    ref = next((s for s in summaries if s.label == reference), None)
    has_test = any(s.test for s in summaries)
    name = study.get("name", rows[0].get("study", folder.name))
    budget = study.get("budget", rows[0].get("budget"))
    budget_text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (budget or {}).items())

    cols = _columns(has_test)
    lines = [f"# Study `{name}`", ""]
    if study.get("claim"):
        lines += [f"**Claim tested:** {study['claim']}", ""]
    if study.get("description"):
        lines += [study["description"], ""]
    planned = len(order) * len(study.get("seeds", [])) if order else 0
    ran = {r["entry"] for r in rows}
    missing = [label for label in order if label not in ran]
    so_far = (f" of {planned} planned" if planned > len(rows) else "") + (
        f"; not run yet: {', '.join(missing)}" if missing else "")
    lines += [f"- Budget per run: {budget_text} (recipe `{study.get('recipe', rows[0].get('recipe'))}`); "
              f"seeds {sorted({r['seed'] for r in rows})}; {len(rows)} runs{so_far}.",
              f"- Data: {_data_text(study.get('data') or {})}.",
              f"- Reference: `{reference}`; Δ is the difference of means from it, in points.",
              "- Top-1 is mean ± sample standard deviation over seeds (one run: no spread); `by seed` lists each "
              "run's in seed order, and `Δ by seed` its difference from the reference's run of the same seed (the "
              "same held-out images and data order). img/s: training images per second of training time; "
              "train min: training time per run (validation excluded). Both as measured during the runs: on a "
              "machine shared with other work they are indicative only (`microdense bench` measures speed).",
              "- Machine(s): " + "; ".join(_machines(rows)) + ".",
              "- Made by: " + _provenance_text(rows) + ".",
              "- Command(s): " + "; ".join(f"`{c}`" for c in sorted({r['command'] for r in rows if r.get('command')}))
              + ".", "",
              "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    table = Table(show_edge=False, title=f"study {name}: {budget_text}")
    for col in cols:
        table.add_column(col, justify="left" if col in ("entry", "model") else "right")
    for s in summaries:
        cells = _cells(s, ref, has_test)
        lines.append("| " + " | ".join(cells) + " |")
        table.add_row(*cells)
    if ref is not None and ref.val:
        lines += ["", _standing(ref, summaries)]
    lines += ["", "![top-1 against parameters and training time](report.png)", ""]
    markdown, plot = folder / "report.md", folder / "report.png"
    curves = epoch_curves(folder, rows)
    curves_png = folder / "curves.png" if curves else None
    if curves_png:
        lines += ["![every run's val top-1, epoch by epoch](curves.png)", ""]
    atomic_write_text(markdown, "\n".join(lines))
    plot_report(plot, summaries, f"{name}: {budget_text}, mean ± std over seeds")
    if curves_png:
        plot_study_curves(curves_png, rows, curves, [s.label for s in summaries], f"{name}: val top-1 per epoch")
    return Report(markdown=markdown, plot=plot, table=table, curves=curves_png)
