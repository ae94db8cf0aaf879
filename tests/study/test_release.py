"""`microdense study release`: each entry's best seed released, chosen once every seed has finished."""
import json

import pytest
import yaml

from microdense.models._pretrained import read_release
from microdense.study.best_seeds import release_best_seeds
from microdense.study.results import read_rows
from microdense_cli import main
from test_run_and_report import SMALL_DATA, TINY, quiet_run

STUDY = dict(claim="a test", data=SMALL_DATA, recipe="budget", budget={"steps": 2}, seeds=[0, 1],
             entries=[{"label": "tiny", "model": TINY}])


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    return path


def test_nothing_is_released_before_every_seed_has_finished(study, tmp_path):
    out, weights = tmp_path / "out", tmp_path / "weights"
    quiet_run(study, out, shard=(0, 2))
    assert [r["seed"] for r in read_rows(out / "results.jsonl")] == [0]
    with pytest.raises(ValueError, match=r"tiny: seed\(s\) 1 of \[0, 1\] have not finished"):
        release_best_seeds(out, "cifar10", out_dir=weights)
    assert not weights.exists()


def test_the_best_seed_is_released_with_the_rows_command(study, tmp_path, capsys):
    out, weights = tmp_path / "out", tmp_path / "weights"
    quiet_run(study, out, command="microdense study run study.yaml --out out")
    # NOTE: two steps teach nothing, so the seeds' accuracies are set apart by hand, each way round in turn.
    rows = read_rows(out / "results.jsonl")
    for winner in (1, 0):
        for r in rows:
            r["val_top1"] = 0.6 if r["seed"] == winner else 0.4
        (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        folder = weights / f"winner{winner}"
        assert main(["study", "release", str(out), "--tag", "cifar10", "--out", str(folder), "--data-note",
                     "made-up images"]) == 0
        said = capsys.readouterr().out
        assert f"tiny: seed {winner} (val top-1 60.00%; chosen over seed {1 - winner} 40.00%)" in said
        record = read_release(folder / f"{TINY}.cifar10.safetensors")["record"]
        assert record["seed"] == winner and record["command"] == "microdense study run study.yaml --out out"
        card = (folder / f"{TINY}.cifar10.md").read_text()
        # the budget recipe validates each image averaged with its mirror: the card says so, and how to repeat it
        assert "| data | made-up images; synthetic" in card and "each averaged with its mirror (`--flip`)" in card
        assert f"microdense eval --checkpoint {TINY}.cifar10 ... --flip" in card


def test_an_unknown_entry_or_a_folder_without_a_study_is_one_line(study, tmp_path, capsys):
    out = tmp_path / "out"
    quiet_run(study, out, shard=(0, 2))
    assert main(["study", "release", str(out), "--tag", "cifar10", "--entries", "small"]) == 2
    assert capsys.readouterr().err == (f"microdense: error: no entry small in {out / 'study.yaml'}; its entries are "
                                       "tiny\n")
    assert main(["study", "release", str(tmp_path / "nowhere"), "--tag", "cifar10"]) == 1
    assert "holds no study.yaml" in capsys.readouterr().err
