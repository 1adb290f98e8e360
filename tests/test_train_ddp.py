"""Distributed (DDP, gloo, 2 CPU processes) training: sharded sampling, rank-0 files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, tmp: str) -> None:
    # Runs in a spawned process: build the same synthetic data as test_train_engine.
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_engine import FAST, make_rows

    from medforensics.training.engine import train

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank,
                            world_size=world)
    try:
        rows, source = make_rows(4, 2)
        res = train(rows, image_source=source,
                    **(FAST | {"out_dir": f"{tmp}/run", "epochs": 2}))
        # Every rank computes validation over its shard; the all-reduced metrics must agree.
        out = {"classes": res.classes, "best_epoch": res.best_epoch,
               "best": res.best_val_balanced_accuracy, "n_metrics": len(res.metrics),
               "accessed_test": any(p.startswith("/nonexistent") for p in source.accessed)}
        Path(f"{tmp}/rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_ranks(tmp_path: Path) -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["classes"] == r1["classes"]
    assert r0["best_epoch"] == r1["best_epoch"] and r0["best"] == r1["best"]
    assert r0["n_metrics"] == 2 and r1["n_metrics"] == 0  # only rank 0 keeps/writes metrics
    assert not r0["accessed_test"] and not r1["accessed_test"]
    run = tmp_path / "run"
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    # The whole training draw is split between the ranks, not duplicated: 12 images x 8
    # patches per epoch in total, counted over both ranks.
    assert metrics[0]["train_samples"] == 12 * 8
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert (run / "model.json").is_file()
