"""``fcnseg segment --engine ray`` against a real local Ray: the local engine's outputs, byte for byte, whatever
fails on the way (a corrupt file, a killed actor, a killed driver), and on a cluster of two nodes.

Each run segments 7 small photos and 1 corrupt file with a seeded random checkpoint at ``--size 64``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rayrun import SETTINGS, segment
from waiting import wait_until

import fcnseg.ray
from fcnseg.outputs import RECORD_DIR
from on_ray.raykill import release

RAY = ["--engine", "ray", "--batch-size", "2"]


def outputs(out: Path) -> dict[str, object]:
    """Every mask and record under ``out``, byte for byte, and every JSON output with its confidences to 5 decimals
    (a float sum whose order depends on the batch an image shared; the masks do not)."""
    found: dict[str, object] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and _kept(p, out)):
        name = str(path.relative_to(out))
        found[name] = path.read_bytes()
        if path.suffix == ".json" and not name.startswith(RECORD_DIR):
            record = json.loads(found[name])
            for c in record["classes"]:
                c["mean_confidence"] = round(c["mean_confidence"], 5)
            found[name] = record
    return found


def _kept(path: Path, out: Path) -> bool:
    return path.name != "summary.csv" and not path.name.startswith(".fcnseg.lock")


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every output: a rewritten file (atomic rename) gets a new inode."""
    return {name: ((out / name).stat().st_ino, (out / name).stat().st_mtime_ns) for name in outputs(out)}


def summary(out: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((out / "summary.csv").open()))
    return [{**r, "outputs": r["outputs"].replace(str(out), "OUT")} for r in rows]


def test_same_outputs_as_the_local_engine_and_a_rerun_skips_all(ray_local, photos, weights, local_run, tmp_path, capfd):
    out = tmp_path / "out"
    assert segment(photos, "-o", out, "--weights", weights, *RAY, *SETTINGS) == 1
    errors = [line for line in capfd.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"fcnseg segment: error: {photos / 'broken.jpg'}: corrupt")
    assert len([n for n in outputs(out) if n.endswith("_mask.png")]) == 7
    assert outputs(out) == outputs(local_run)  # masks, JSON, records (names included)
    assert summary(out) == summary(local_run)

    before = stamps(out)
    assert segment(photos, "-o", out, "--weights", weights, *RAY, *SETTINGS) == 1
    assert "7 skipped" in capfd.readouterr().out
    assert stamps(out) == before  # nothing rewritten


def test_a_killed_actor_is_restarted_and_its_batch_retried(ray_local, photos, weights, local_run, tmp_path):
    kill = ray_local.flags / "kill"
    kill.touch()
    try:
        assert segment(photos, "-o", tmp_path / "out", "--weights", weights, *RAY, *SETTINGS) == 1
        assert not kill.exists() and kill.with_name("kill.taken").exists()  # an actor did die
    finally:
        kill.unlink(missing_ok=True)
        kill.with_name("kill.taken").unlink(missing_ok=True)
    assert outputs(tmp_path / "out") == outputs(local_run)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_driver_is_resumed_by_running_it_again(ray_local, photos, weights, local_run, tmp_path):
    out, hold, held = tmp_path / "out", ray_local.flags / "hold", ray_local.flags / "held"
    argv = ["segment", str(photos), "-o", str(out), "--weights", str(weights), *RAY, "--workers", "1", *SETTINGS]
    driver = (
        f"import ray, sys; ray.init(address={ray_local.address!r}, logging_level='WARNING', "
        "runtime_env={'worker_process_setup_hook': 'raykill.install'}); "
        f"from fcnseg.cli import main; sys.exit(main({argv!r}))"
    )
    os.mkfifo(hold)
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(held.exists, timeout=600)  # the actor wrote its first batch and waits
        proc.kill()
        proc.wait()
        wait_until(lambda: not _alive(int(held.read_text())), timeout=300)  # Ray ends a dead driver's actors
    finally:
        proc.kill()
        release(hold)
        held.unlink(missing_ok=True)
    first = {n: s for n, s in stamps(out).items() if n.endswith("_mask.png")}
    assert 1 <= len(first) <= 2  # one batch of 2 rows (the corrupt file may be one)

    before = stamps(out)
    assert segment(photos, "-o", out, "--weights", weights, *RAY, *SETTINGS) == 1
    after = stamps(out)
    assert {n: after[n] for n in first} == first  # the finished images are not rewritten
    records = [n for n in before if n.startswith(RECORD_DIR) and n.replace(RECORD_DIR + "/", "") in str(first)]
    assert all(after[n] == before[n] for n in records)
    assert outputs(out) == outputs(local_run)


TWO_NODES = """
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 100 << 20,
                                                       "include_dashboard": False})
cluster.add_node(num_cpus=2, object_store_memory=100 << 20)
import ray
ray.init(address=cluster.address, logging_level="WARNING", runtime_env={"worker_process_setup_hook": "raykill.install"})
try:
    from fcnseg.cli import main
    code = main(sys.argv[1:])
    print("nodes:", sum(n["Alive"] for n in ray.nodes()))
finally:
    ray.shutdown()
    cluster.shutdown()
sys.exit(code)
"""


def test_two_nodes_write_the_same_masks(photos, weights, local_run, tmp_path):
    out, flags = tmp_path / "out", tmp_path / "flags"
    flags.mkdir()
    argv = ["segment", str(photos), "-o", str(out), "--weights", str(weights), *RAY, "--workers", "2", *SETTINGS]
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "FCNSEG_TEST_RAY_FLAGS": str(flags), "PYTHONPATH": path}  # raykill.py, on every node
    done = subprocess.run(
        [sys.executable, "-c", TWO_NODES, *argv], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 1, done.stderr[-3000:]  # the corrupt file
    assert "nodes: 2" in done.stdout
    assert len(list((flags / "nodes").iterdir())) == 2  # an actor on each node
    assert outputs(out) == outputs(local_run)


def test_python_api_adds_mask_and_class_share_columns(ray_local, photos, weights):
    from fcnseg import Segmenter

    paths = sorted(str(p) for p in photos.rglob("*.jpg"))
    ds = ray_local.ray.data.read_binary_files(paths, include_paths=True)
    rows = {r["path"]: r for r in fcnseg.ray.segment(ds, weights=weights, size=64, class_share=True).take_all()}
    assert sorted(rows) == paths
    local = Segmenter("fcn_resnet50", weights, size=64)
    for path, row in rows.items():
        if path.endswith("broken.jpg"):
            assert row["error"].startswith(f"{path}: ") and row["mask"].size == 0
            continue
        mask = local.predict(path).mask
        assert row["error"] == "" and (row["mask"] == mask).all()
        counts = [(mask == k).sum() / mask.size for k in range(3)]
        assert row["class_share"].tolist() == pytest.approx(counts)


def test_without_ray_one_line_says_what_to_install(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert segment(photos, "-o", tmp_path / "out", "--weights", "none", "--engine", "ray") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'fcnseg[ray]'" in err[0], err
    assert not (tmp_path / "out").exists()
