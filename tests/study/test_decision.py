"""Decision rules as data: each kind gives the verdicts its rule states on constructed rows, a study file's rule is
checked where it is read, and `microdense study decide` applies the rule registered before the first row."""
import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from microdense.errors import ArgumentError, ConfigError
from microdense.study.decision import (FLOOR, EligibleThenTime, Frontier, PairedMargin, PairedThenTime,
                                      equivalent_size, margin_verdict)
from microdense.study.spec import parse_study

TINY = "microdensenet_cifar_tiny"


def rows(*runs, params=None):
    """Result rows from (entry, seed, val top-1 in percent or None for a diverged run)."""
    params = params or {}
    return [dict(entry=e, seed=s, val_top1=None if v is None else v / 100, params=params.get(e, 1000))
            for e, s, v in runs]


@pytest.mark.parametrize("d, expected", [
    ([1.0, 0.9], "SUPPORTED"),
    ([0.2, 0.25], "NOT SETTLED at this size"),  # same sign, inside the 0.3-point floor
    ([3.0, 0.5], "NOT SETTLED at this size"),  # same sign, mean 1.75 inside the seeds' spread 1.77
    ([2.0, -0.1], "NOT SETTLED at this size"),  # the seeds disagree
    ([-1.0, -1.2], "CONTRADICTED"),
    ([-0.2, -0.25], "NOT SETTLED at this size"),
])
def test_paired_margin_verdicts(d, expected):
    assert margin_verdict(d, FLOOR) == expected


def test_paired_margin_pairs_each_variant_with_the_reference_at_the_same_seed():
    rule = PairedMargin(claims={"residual": "micro-dense aggregation", "constant": "pyramidal widths",
                                "fixed": "adaptive cardinality"})
    lines = rule.decide(rows(("default", 0, 87), ("default", 1, 86), ("residual", 0, 84), ("residual", 1, 85),
                             ("constant", 0, 86), ("fixed", 1, None)), "default")
    assert lines[0] == ("residual (micro-dense aggregation): default - residual by seed +3.00 / +1.00; mean +2.00, "
                        "sd 1.41, bar max(sd, 0.3) = 1.41 -> SUPPORTED")
    assert lines[1] == "constant (pyramidal widths): 1 seed(s) paired with the default; no verdict yet"
    assert lines[2] == ("fixed (adaptive cardinality): 0 seed(s) paired with the default; no verdict yet "
                        "(fixed seed 1 diverged)")


# the ResNet curve of the frontier study's shape: three sizes, 0.27M, 0.86M and 1.73M parameters
SIZES = {"r20": 272_474, "r56": 855_770, "r110": 1_731_002, "tiny": 260_506, "small": 1_070_000}
CURVE = [("r20", 0, 85.0), ("r20", 1, 85.2), ("r56", 0, 87.0), ("r56", 1, 87.2), ("r110", 0, 88.0), ("r110", 1, 88.2)]
FRONTIER = Frontier(curve=["r20", "r56", "r110"], judged=["tiny", "small"])


def _curve_at(params):
    """The mean curve of CURVE at `params`, by hand: 85.1 -> 87.1 -> 88.1, linear in log(params)."""
    x = math.log(params)
    x20, x56, x110 = (math.log(SIZES[k]) for k in ("r20", "r56", "r110"))
    if x <= x56:
        return 85.1 + 2.0 * (x - x20) / (x56 - x20)
    return 87.1 + 1.0 * (x - x56) / (x110 - x56)


def _verdict(lines, net):
    return next(line for line in lines if line.startswith(net)).rsplit("-> ", 1)[1]


@pytest.mark.parametrize("small_top1, expected", [
    ((88.0, 88.1), "SUPPORTED at this size"),  # mean 88.05 - 0.3 lies above the curve at 1.07M (~87.42)
    ((87.5, 87.6), "NOT SETTLED at this size"),  # 87.55 - 0.3 lies below it, 87.55 + 0.3 above
    ((86.9, 87.0), "CONTRADICTED at this size"),  # 86.95 + 0.3 lies below it
    ((86.0, 89.0), "NOT SETTLED at this size"),  # mean 87.5 but a 2.1-point spread between the seeds
])
def test_frontier_verdicts_against_the_curve_at_the_nets_own_size(small_top1, expected):
    at_small = _curve_at(SIZES["small"])
    assert 87.3 < at_small < 87.5  # the constructed cases sit where their comments say
    lines = FRONTIER.decide(rows(*CURVE, ("small", 0, small_top1[0]), ("small", 1, small_top1[1]), params=SIZES), "r20")
    assert _verdict(lines, "small") == expected
    assert f"curve at its size {at_small:.2f}" in next(line for line in lines if line.startswith("small"))


def test_frontier_equivalent_size_and_its_range_come_from_the_mean_and_per_seed_curves():
    lines = FRONTIER.decide(rows(*CURVE, ("small", 0, 87.6), ("small", 1, 88.0), params=SIZES), "r20")
    line = next(line for line in lines if line.startswith("small"))
    # mean 87.8 on the mean curve: 70% of the way from r56 (87.1) to r110 (88.1) in log(params)
    x56, x110 = math.log(SIZES["r56"]), math.log(SIZES["r110"])
    at = math.exp(x56 + 0.7 * (x110 - x56))
    assert f"equivalent size {at / 1e6:.2f}M ({at / SIZES['small']:.2f}x)" in line
    # seed 0: 87.6 on (85.0, 87.0, 88.0) -> 60% of r56..r110; seed 1: 88.0 on (85.2, 87.2, 88.2) -> 80%
    seed0, seed1 = (math.exp(x56 + f * (x110 - x56)) for f in (0.6, 0.8))
    assert f"by seed {seed0 / 1e6:.2f}M ({seed0 / SIZES['small']:.2f}x) / {seed1 / 1e6:.2f}M" in line


def test_frontier_never_extrapolates_beyond_the_curve():
    lines = FRONTIER.decide(rows(*CURVE, ("tiny", 0, 84.0), ("tiny", 1, 84.2), ("small", 0, 90.0),
                                 ("small", 1, 90.2), params=SIZES), "r20")
    tiny = next(line for line in lines if line.startswith("tiny"))
    small = next(line for line in lines if line.startswith("small"))
    assert "equivalent size below 0.27M (<1.05x)" in tiny
    assert "curve at its size 85.10" in tiny  # 0.26M lies below the curve: held at resnet20's end, not extended
    assert tiny.endswith("CONTRADICTED at this size")
    assert "equivalent size above 1.73M (>1.62x)" in small
    assert small.endswith("SUPPORTED at this size")


def test_frontier_equivalent_size_is_the_first_crossing_of_a_curve_that_falls():
    points = [(math.log(1e5), 80.0), (math.log(1e6), 86.0), (math.log(1e7), 84.0)]
    where, size = equivalent_size(points, 83.0)
    assert where == "at" and size == pytest.approx(10 ** 5.5)  # halfway up the first segment, not on the falling one
    assert equivalent_size(points, 87.0) == ("above", pytest.approx(1e7))  # no measured net reaches it
    assert equivalent_size(points, 80.0) == ("below", pytest.approx(1e5))


def test_frontier_waits_for_two_complete_seeds_of_the_curve_and_of_each_net():
    partial = [r for r in CURVE if r[:2] != ("r110", 1)]
    assert FRONTIER.decide(rows(*partial, ("tiny", 0, 85), ("tiny", 1, 85), params=SIZES), "r20") == [
        "the curve (r20, r56, r110) has 1 complete seed(s); no verdict yet"]
    lines = FRONTIER.decide(rows(*CURVE, ("tiny", 0, 85), ("small", 0, 88), ("small", 1, None), params=SIZES), "r20")
    assert "tiny: 1 seed(s) beside a complete curve; no verdict yet" in lines
    assert "small: 1 seed(s) beside a complete curve; no verdict yet (small seed 1 diverged)" in lines


def _study_folder(folder: Path, runs, minutes=None) -> Path:
    """A study folder holding result rows from (entry, seed, val top-1 in percent); an equal-time one says its
    minutes in its study.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(*runs)))
    if minutes:
        (folder / "study.yaml").write_text(yaml.safe_dump({"budget": {"time_budget": minutes}}))
    return folder


def _bench(folder: Path, rates) -> None:
    (folder / "bench.json").write_text(json.dumps({"results": [
        {"model": f"spec-{label}", "label": label, "train_img_s": rate} for label, rate in rates.items()]}))


POSTACT = PairedThenTime(candidate="post", names={"pre": "pre-activation", "post": "post-activation"},
                         time_leg="timed")
WORSE_PER_EPOCH = "pre-activation stays (post-activation is worse per epoch than two seeds can resolve)"
TRAILS = "pre-activation stays (post-activation trails at equal time)"
POST = "post-activation becomes the default"


@pytest.mark.parametrize("post_epochs, post_timed, post_rate, outcome", [
    ((80.0, 79.0), (75.0, 75.0), 100.0, WORSE_PER_EPOCH),
    ((85.8, 84.8), (75.0, 75.0), 1.0, POST),  # 0.2 points worse per epoch, inside the 0.3 floor: eligible
    ((84.5, 85.5), (75.0, 75.0), 1.0, POST),  # -1.5 / +0.5: mean -0.5 inside the seeds' spread 1.41: eligible
    ((86.1, 85.1), (76.0, 76.0), 1.0, POST),  # ahead at equal time
    ((86.1, 85.1), (72.0, 72.0), 100.0, TRAILS),
    ((86.1, 85.1), (74.1, 73.9), 100.0, POST),  # a tie in time, faster
    ((86.1, 85.1), (74.1, 73.9), 10.0, "pre-activation stays"),  # a tie in time, slower
])
def test_paired_then_time_outcomes(tmp_path, post_epochs, post_timed, post_rate, outcome):
    epochs = [("pre", 0, 86.0), ("pre", 1, 85.0), ("post", 0, post_epochs[0]), ("post", 1, post_epochs[1])]
    folder = _study_folder(tmp_path / "epochs", epochs)
    _study_folder(tmp_path / "timed", [("pre", 0, 74.0), ("pre", 1, 74.0), ("post", 0, post_timed[0]),
                                       ("post", 1, post_timed[1])], minutes=10)
    _bench(folder, {"pre": 50.0, "post": post_rate})
    lines = POSTACT.decide(rows(*epochs), "pre", folder)
    assert lines[-1] == "outcome: " + outcome
    if outcome != WORSE_PER_EPOCH:
        assert lines[1].startswith("(2) 10 minutes: pre 74.00, post ")


def test_paired_then_time_waits_for_two_seeds(tmp_path):
    lines = POSTACT.decide(rows(("pre", 0, 86), ("pre", 1, 85), ("post", 0, 86)), "pre", tmp_path)
    assert lines == ["equal epochs incomplete (seeds with both entries: [0]): no decision yet"]


def test_eligible_then_time_chooses_among_the_eligible_by_time_then_speed(tmp_path):
    # d=8 is best per epoch; d=4 is within d=4's own spread of it, d=2 within the best's spread, d=16 in neither; at
    # equal time d=4 and d=8 tie within 0.3 points, so the faster of the two wins
    epochs = [("d=8", 0, 82.5), ("d=8", 1, 81.5), ("d=4", 0, 82.0), ("d=4", 1, 80.0), ("d=2", 0, 81.5),
              ("d=2", 1, 81.5), ("d=16", 0, 80.0), ("d=16", 1, 80.0)]
    folder = _study_folder(tmp_path / "epochs", epochs)
    _study_folder(tmp_path / "timed", [("d=8", 0, 77.0), ("d=8", 1, 77.0), ("d=4", 0, 77.2), ("d=4", 1, 77.2),
                                       ("d=2", 0, 76.0), ("d=2", 1, 76.0), ("d=16", 0, 80.0), ("d=16", 1, 80.0)],
                  minutes=10)
    _bench(folder, {"d=4": 90.0, "d=8": 120.0, "d=16": 200.0})
    lines = EligibleThenTime(time_leg="timed").decide(rows(*epochs), "d=8", folder)
    step2 = next(line for line in lines if line.startswith("(2)"))
    assert "d=2 76.00" in step2  # eligible: 0.5 behind, inside the best's spread 0.71 though its own is 0
    assert "d=16" not in step2  # out at step (1), so its faster, more accurate timed runs do not count
    assert lines[-1] == "winner: d=8"


def test_the_time_rules_wait_for_every_entry_and_both_legs(tmp_path):
    """No winner is named among the entries that happen to have finished: an entry with no row (or only diverged
    ones), an eligible entry with one equal-time seed, or a tie the speed leg did not measure makes the rule wait."""
    epochs = [("d=8", 0, 82.0), ("d=8", 1, 82.0), ("d=4", 0, 82.0), ("d=4", 1, 82.0)]
    folder = _study_folder(tmp_path / "epochs", epochs)
    rule = EligibleThenTime(time_leg="timed")
    assert rule.decide(rows(*epochs), "d=8", folder, entries=["d=8", "d=4", "d=2"]) == [
        "equal epochs incomplete (d=2 have fewer than 2 seeds): no decision yet"]
    assert rule.decide(rows(*epochs, ("d=2", 0, None)), "d=8", folder)[0].startswith("equal epochs incomplete (d=2")
    _study_folder(tmp_path / "timed", [("d=8", 0, 77.0), ("d=8", 1, 77.0), ("d=4", 0, 77.0)], minutes=10)
    assert rule.decide(rows(*epochs), "d=8", folder)[-1] == (
        "equal time incomplete (d=4 have fewer than 2 seeds): no decision yet")
    _study_folder(tmp_path / "timed", [("d=8", 0, 77.0), ("d=8", 1, 77.0), ("d=4", 0, 77.0), ("d=4", 1, 77.0)])
    _bench(folder, {"d=8": 120.0})
    assert rule.decide(rows(*epochs), "d=8", folder)[-1] == "the speed leg lacks d=4: no decision yet"
    pairs = [("pre", 0, 86.0), ("pre", 1, 85.0), ("post", 0, 86.0), ("post", 1, 85.0)]
    _study_folder(tmp_path / "timed", [("pre", 0, 74.0), ("pre", 1, 74.0), ("post", 0, 75.0)], minutes=10)
    assert POSTACT.decide(rows(*pairs), "pre", folder)[-1] == (
        "equal time incomplete (post have fewer than 2 seeds): no decision yet")


def test_a_legacy_speed_leg_is_read_through_its_named_specs(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "bench.json").write_text(json.dumps({"results": [{"model": "m:channels_last=true", "train_img_s": 5.0},
                                                               {"model": "m:amp=bf16", "train_img_s": 9.0}]}))
    rule = EligibleThenTime(bench_specs={"a": "m:channels_last=true"})
    assert rule._rates(folder) == {"a": 5.0}


STUDY = dict(budget={"epochs": 1}, seeds=[0, 1], entries=[{"model": TINY, "label": "a"},
                                                          {"model": "resnet20_cifar", "label": "b"}])


@pytest.mark.parametrize("decision, error, message", [
    ({"kind": "best_guess"}, ConfigError, "decision must be a mapping with a kind, one of paired_margin, frontier, "),
    ({"kind": "paired_margin", "margin": 1}, ConfigError, r"has no field\(s\) \['margin'\]"),
    ({"kind": "paired_margin", "claims": {"c": "x"}}, ConfigError, r"decision names \['c'\], which are no entry's"),
    ({"kind": "paired_margin", "floor": -0.1}, ConfigError, "PairedMargin.floor: -0.1 is out of range"),
    ({"kind": "frontier", "curve": "b"}, ArgumentError, "Frontier.curve: needs a list of strings"),
])
def test_a_bad_decision_section_is_refused_where_the_study_is_read(decision, error, message):
    with pytest.raises(error, match=message):
        parse_study({**STUDY, "decision": decision}, "s", "study file s.yaml")


def test_the_packaged_rules_parse_and_name_their_entries():
    from microdense.study.spec import load_study
    frontier = load_study("frontier").decision
    assert (frontier.curve, frontier.judged, frontier.floor) == (["resnet20", "resnet56", "resnet110"],
                                                                ["tiny", "small"], 0.3)
    assert set(load_study("ablation").decision.claims) == {"residual", "constant", "fixed", "dense"}


# --- registration: the rule that stood at the first row's commit ------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def registered(tmp_path):
    """A study file committed with its rule, and its rows naming that commit: (study file, study folder)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    path = repo / "s.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "reference": "a",
                                    "decision": {"kind": "paired_margin", "claims": {"b": "b is worse"}}}))
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "the study and its rule")
    commit = _git(repo, "rev-parse", "HEAD")
    folder = tmp_path / "study"
    folder.mkdir()
    made = [dict(row, provenance={"code": {"commit": commit}}, finished=f"2026-12-0{i + 1}")
            for i, row in enumerate(rows(("a", 0, 87), ("b", 0, 85), ("a", 1, 86), ("b", 1, 85)))]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in made))
    return path, folder


def test_decide_writes_the_registered_rules_verdicts(registered, cli_here):
    path, folder = registered
    proc = cli_here("study", "decide", str(path), "--out", str(folder))
    assert proc.returncode == 0, proc.stderr
    expected = ("b (b is worse): a - b by seed +2.00 / +1.00; mean +1.50, sd 0.71, bar max(sd, 0.3) = 0.71 "
                "-> SUPPORTED\n")
    assert (folder / "decision.txt").read_text() == expected
    assert proc.stdout == expected + f"wrote {folder / 'decision.txt'}\n"


def test_a_rule_edited_after_the_first_row_is_caught(registered, cli_here):
    path, folder = registered
    study = yaml.safe_load(path.read_text())
    study["decision"]["floor"] = 1.0  # loosened after the rows were seen
    path.write_text(yaml.safe_dump(study))
    proc = cli_here("study", "decide", str(path), "--out", str(folder))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "the rule in s.yaml differs from the one it held at commit" in proc.stderr
    text = (folder / "decision.txt").read_text()
    assert text.startswith("RULE NOT AS REGISTERED: the rule in s.yaml differs")
    assert "'floor': 0.3" in text.splitlines()[0] and "'floor': 1.0" in text.splitlines()[0]
    proc = cli_here("study", "decide", str(path), "--out", str(folder), "--accept-changed-rule")
    assert proc.returncode == 0
    assert "; accepted by --accept-changed-rule" in (folder / "decision.txt").read_text().splitlines()[0]


def test_rows_from_two_commits_of_the_code_are_said_to_be_pooled(registered):
    from microdense.study.decide import decide
    from microdense.study.spec import load_study
    path, folder = registered
    made = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    made[-1]["provenance"] = {"code": {"commit": "f" * 40}}  # a run resumed after the code moved on
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in made))
    lines = decide(load_study(str(path)), folder).lines
    assert lines[0].startswith("rows from 2 commits of the code (") and "ffffff" in lines[0]
    assert lines[1].endswith("-> SUPPORTED")


def test_a_reference_swapped_after_the_first_row_is_caught(registered):
    """The paired rules measure d_s from the reference: swapping it flips every sign, so it is part of the rule."""
    from microdense.study.decide import decide
    from microdense.study.spec import load_study
    path, folder = registered
    assert decide(load_study(str(path)), folder).problem is None
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "reference": "b",
                                    "decision": {"kind": "paired_margin", "claims": {"a": "b is worse"}}}))
    assert decide(load_study(str(path)), folder).problem == ("the reference in s.yaml is 'b', but it was 'a' at "
                                                             "commit " + _git(path.parent, "rev-parse", "HEAD")[:7]
                                                             + ", the first row's")


def test_a_rule_moved_from_prose_into_data_is_accepted_only_where_it_names_the_rows_prose(registered, cli_here):
    path, folder = registered
    repo = path.parent
    study = yaml.safe_load(path.read_text())
    rule = study.pop("decision")
    study["description"] = "RULE: b is worse when a - b > max(sd, 0.3) at both seeds"
    path.write_text(yaml.safe_dump(study))
    _git(repo, "commit", "-qam", "the rule as prose only")
    prose = _git(repo, "rev-parse", "HEAD")
    rows_ = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    (folder / "results.jsonl").write_text("".join(
        json.dumps(dict(r, provenance={"code": {"commit": prose}})) + "\n" for r in rows_))

    path.write_text(yaml.safe_dump({**study, "decision": rule}))  # moved into data, naming no commit
    proc = cli_here("study", "decide", str(path), "--out", str(folder))
    assert proc.returncode == 2 and "names no commit whose prose it encodes" in proc.stderr

    path.write_text(yaml.safe_dump({**study, "decision": {**rule, "encodes": prose}}))
    assert cli_here("study", "decide", str(path), "--out", str(folder)).returncode == 0

    study["description"] = "RULE: b is worse when a - b > 0 at both seeds"  # other prose, then encoded
    path.write_text(yaml.safe_dump(study))
    _git(repo, "commit", "-qam", "other prose")
    other = _git(repo, "rev-parse", "HEAD")
    path.write_text(yaml.safe_dump({**study, "decision": {**rule, "encodes": other}}))
    proc = cli_here("study", "decide", str(path), "--out", str(folder))
    assert proc.returncode == 2 and f"the rule encodes the prose of commit {other}" in proc.stderr


def test_decide_refuses_a_study_without_rule_or_rows(registered, cli_here, tmp_path):
    path, folder = registered
    proc = cli_here("study", "decide", str(path), "--out", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "holds no rows yet; run the study first" in proc.stderr
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(STUDY))
    proc = cli_here("study", "decide", str(bare), "--out", str(folder))
    assert proc.returncode == 2 and "has no decision section" in proc.stderr


def test_decide_says_a_study_made_in_code_has_no_file_to_read_its_registered_rule_from(registered):
    """A rule is judged as registered in its file's history: a Study made by parse_study alone has a rule but no
    file, and is told so (not that it has no rule)."""
    from microdense.study.decide import decide
    path, folder = registered
    study = parse_study(yaml.safe_load(path.read_text()), "s", "test")
    assert study.decision is not None and study.path is None
    with pytest.raises(ConfigError, match="study s was not read from a file"):
        decide(study, folder)


# --- the speed leg ------------------------------------------------------------------------------------------------

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def test_the_speed_leg_measures_the_nets_the_study_ran_as_its_committed_bench_did():
    """The ablation's committed cost leg was measured on these specs (once made by a script of its own)."""
    from microdense.study.spec import load_study
    from microdense.study.speed_leg import bench_specs, study_as_run
    specs = bench_specs(study_as_run(RESULTS / "ablation")["entries"], load_study("ablation").bench)
    committed = json.loads((RESULTS / "ablation" / "bench.json").read_text())["results"]
    assert [spec for _, spec in specs] == [r["model"] for r in committed]
    assert [label for label, _ in specs] == ["default", "residual", "constant", "fixed", "dense", "resnet20_cifar"]


def test_a_new_study_with_a_rule_and_a_speed_leg_is_one_yaml_file(tmp_path, cli_here):
    """Written, committed, run, decided and benchmarked with no script: its rows record the study file's own commit,
    so its rule is read as it stood then, and an edit after the first row is caught."""
    repo = tmp_path / "lab"
    repo.mkdir()
    _git(repo, "init", "-q")
    study = repo / "mine.yaml"
    study.write_text(yaml.safe_dump({**STUDY, "reference": "a",
                                     "decision": {"kind": "paired_margin", "claims": {"b": "a beats b"}},
                                     "bench": {"batch_size": 2, "steps": 1, "warmup": 0, "rounds": 1,
                                               "channels_last": False}}))
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "my study, its rule and its speed leg")
    folder = tmp_path / "study"
    proc = cli_here("study", "bench", str(study), "--out", str(folder))
    assert proc.returncode == 2 and "run the study into" in proc.stderr  # no study.yaml: nothing ran yet
    assert cli_here("study", "run", str(study), "--out", str(folder), "--smoke", "--allow-dirty",
                    "--quiet").returncode == 0
    rows_ = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert {r["study_file"]["commit"] for r in rows_} == {_git(repo, "rev-parse", "HEAD")}

    proc = cli_here("study", "decide", str(study), "--out", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert (folder / "decision.txt").read_text() == "b (a beats b): 1 seed(s) paired with the a; no verdict yet\n"
    study.write_text(study.read_text().replace("a beats b", "a is better than b"))
    proc = cli_here("study", "decide", str(study), "--out", str(folder))
    assert proc.returncode == 2 and "differs from the one it held at commit" in proc.stderr

    proc = cli_here("study", "bench", str(study), "--out", str(folder))
    assert proc.returncode == 0, proc.stderr
    results = json.loads((folder / "bench.json").read_text())["results"]
    assert [(r["label"], r["model"]) for r in results] == [("a", TINY), ("b", "resnet20_cifar")]
    assert all(r["train_img_s"] > 0 for r in results)
    table = (folder / "bench.txt").read_text()
    assert "dense fp32 matmul" in table and TINY in table and "resnet20_cifar" in table
