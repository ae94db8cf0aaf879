"""Two CPU processes under Lightning's DDP (gloo): identical weights, metrics reduced over ranks."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from microdense_cli import main

DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import lightning.pytorch as pl
    from safetensors.torch import save_file
    from microdense.train.config import resolve_config
    from microdense.train.run import train

    class RecordRank(pl.Callback):
        \"\"\"Each rank writes its final weights and what it believes the validation figures are.\"\"\"
        def on_train_end(self, trainer, system):
            out = Path(sys.argv[2])
            rank = trainer.global_rank
            weights = {k: v.contiguous() for k, v in system.model.state_dict().items()}
            save_file(weights, out / f"rank{rank}.safetensors")
            (out / f"rank{rank}.json").write_text(json.dumps(dict(
                world_size=trainer.world_size,
                val_top1=float(trainer.callback_metrics["val/top1"]),
                val_loss=float(trainer.callback_metrics["val/loss"]),
                train_batches=trainer.num_training_batches, peak_lr=system.peak_lr)))

    cfg = resolve_config({"data": dict(name="imagefolder", root=sys.argv[1], val_split=0.25, batch_size=5),
                          "run": dict(epochs=2, accelerator="cpu", devices="2", out=sys.argv[2])})
    train(cfg, callbacks=[RecordRank()])
""")


@pytest.mark.slow
def test_two_process_ddp_identical_weights_and_reduced_metrics(tmp_path, capsys):
    from conftest import make_image_tree
    # 3 classes x 13 images: 30 train / 9 val, so the two ranks validate on uneven shards (5 and 4 images)
    tree = make_image_tree(tmp_path / "images", classes=3, per_class=13)
    out = tmp_path / "run"
    out.mkdir()
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    # NOTE: the run folder exists (the callback writes there) but holds no run yet, so training accepts it.
    proc = subprocess.run([sys.executable, str(script), str(tree), str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["train_batches"] == ranks[1]["train_batches"] == 3  # 30 images / 2 ranks / 5 per batch
    # the learning rate follows the global batch: the fast recipe's 0.2 per 256 images, at 2 x 5 images per step
    assert ranks[0]["peak_lr"] == ranks[1]["peak_lr"] == pytest.approx(0.2 * 10 / 256)
    w0, w1 = (load_file(str(out / f"rank{r}.safetensors")) for r in range(2))
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=key)
    # every rank reports the same, reduced, validation figures ...
    assert ranks[0]["val_top1"] == ranks[1]["val_top1"]
    assert ranks[0]["val_loss"] == pytest.approx(ranks[1]["val_loss"])
    # ... and they are the figures of the whole validation split, as a single process measures them
    assert main(["eval", "--checkpoint", str(out), "--data", "imagefolder", "--data-dir", str(tree),
                 "--val-split", "0.25", "--json", "--accelerator", "cpu"]) == 0
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert single["images"] == 9
    assert single["top1"] == pytest.approx(ranks[0]["val_top1"], abs=1e-6)
    assert single["loss"] == pytest.approx(ranks[0]["val_loss"], rel=1e-3)


def test_more_cpu_processes_than_cores_is_said_in_one_line_before_they_start(tmp_path, monkeypatch, caplog):
    from microdense.train import run
    from microdense.train.config import resolve_config

    def no_launch(*args, **kwargs):
        raise KeyboardInterrupt  # NOTE: stands in for trainer.fit, which would start the processes

    monkeypatch.setattr(run, "_fit", no_launch)
    monkeypatch.setattr(run.os, "sched_getaffinity", lambda pid: {0})  # a one-core machine
    cfg = resolve_config({"data": {"name": "synthetic", "limit_images": 8, "batch_size": 4},
                          "run": {"max_steps": 1, "accelerator": "cpu", "devices": "2", "out": str(tmp_path / "r")}})
    with caplog.at_level("WARNING", logger="microdense"), pytest.raises(KeyboardInterrupt):
        run.train(cfg, progress=False)
    said = [r.getMessage() for r in caplog.records if "training processes" in r.getMessage()]
    assert said == ["microdense: run.devices starts 2 training processes on a CPU with 1 core: they share the cores, "
                    "so a step is not faster, and the run takes peak lr 0.00625: 0.2 per 256 images, scaled (linear) "
                    "to 8 images per step; run.devices 1 (--devices 1) runs one"]


def test_processes_within_the_cores_are_not_warned_about():
    from microdense.train.run import cpu_oversubscribed
    assert cpu_oversubscribed(2, 2, "peak lr 0.1 at 256 images per step") is None
    assert "3 training processes on a CPU with 2 cores" in cpu_oversubscribed(3, 2, "peak lr 0.1")
