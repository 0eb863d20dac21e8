"""Nothing left behind: build folders of killed Downsample builders are swept (never a live
builder's), and a finished run's tmp/ is emptied (real subprocesses, real SIGKILL)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from conftest import cryoweave_command, subprocess_env
from cryoweave.demo.synthetic import write_particles
from cryoweave.engine import fourier_crop
from cryoweave.formats import read_images
from cryoweave.protocols.downsample import DownsampleCache


def wait_for(condition, timeout_s=90.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_during_downsample_leaves_nothing_after_continue(tmp_path):
    (tmp_path / "data").mkdir()
    star = write_particles(tmp_path / "data", 600, 128, 1.0, np.random.default_rng(2))
    (tmp_path / "params.json").write_text(json.dumps({"particles": str(star), "box_px": 64}))
    cache = tmp_path / "proj" / "Cache" / "downsample"
    process = subprocess.Popen(
        cryoweave_command("run-protocol", "Downsample", "params.json", "--project", "proj",
                          "--quiet"), cwd=tmp_path, env=subprocess_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: list(cache.glob(".*.building")), what="a build folder")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    left = list(cache.glob(".*.building"))
    assert left, "the builder finished before it was killed; the test needs a larger stack"

    resumed = subprocess.run(cryoweave_command("run-protocol", "--continue", "2", "--project",
                                               "proj", "--json", "--quiet"),
                             cwd=tmp_path, env=subprocess_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "finished"
    assert not list(cache.glob(".*.building")) and not list(cache.rglob("*.part"))
    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1
    np.testing.assert_array_equal(read_images(entries[0] / "particles.64.mrcs"),
                                  fourier_crop(read_images(tmp_path / "data/particles.mrcs"),
                                               64))
    for run_folder in (tmp_path / "proj" / "Runs").iterdir():  # import and Downsample
        assert list((run_folder / "tmp").iterdir()) == [], run_folder


HOLDER = textwrap.dedent("""
    import fcntl, pathlib, sys, time
    root, key = pathlib.Path(sys.argv[1]), sys.argv[2]
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / f".{key}.lock", "a+")
    fcntl.flock(handle, fcntl.LOCK_EX)
    building = root / f".{key}.0badc0de.building"
    building.mkdir()
    (building / ".particles.16.mrcs.part").write_bytes(b"partial")
    print("building", flush=True)
    time.sleep(600)
""")


def test_a_live_builder_is_left_alone_and_swept_once_killed(tmp_path):
    root = tmp_path / "Cache"
    key = "f" * 32
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), key],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "building"
        building = root / f".{key}.0badc0de.building"
        cache = DownsampleCache(root)

        def build(path):
            path.write_bytes(b"stack")
            return {}

        entry = cache.get_or_build("0" * 32, "s.mrcs", build)  # another key: a sweep runs
        assert not entry.hit and building.is_dir()  # its builder is alive: kept
        assert cache.sweep_dead_builders() == [] and building.is_dir()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert cache.get_or_build("0" * 32, "s.mrcs", build).hit
        assert not building.exists()  # swept by a lookup that hit the cache
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
