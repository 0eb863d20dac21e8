"""Downsample: exact pixels, STAR rewriting per optics group, the project cache, bad input."""

from __future__ import annotations

import os
import threading
import time

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from cryoweave.demo.synthetic import write_particles
from cryoweave.engine import fourier_crop
from cryoweave.errors import InputError, ParamError
from cryoweave.formats import (
    read_images,
    read_info,
    read_particles_star,
    write_mrc,
)
from cryoweave.plugin import registry
from cryoweave.protocols.downsample import downsample_file
from cryoweave.store import ParticleSet
from cryoweave.workflow import run_protocol


@pytest.fixture
def star(tmp_path):
    return write_particles(tmp_path / "data", 60, 48, 1.5, np.random.default_rng(0)) \
        if (tmp_path / "data").mkdir() is None else None


def test_pixels_equal_the_engine_crop_and_metadata_is_rewritten(tmp_path, star):
    result = downsample_file(star, tmp_path / "out", box_px=24)
    source = read_images(tmp_path / "data" / "particles.mrcs")
    np.testing.assert_array_equal(read_images(result.stack_path), fourier_crop(source, 24))
    assert read_info(result.stack_path).voxel_size_a == pytest.approx(3.0)
    before = starfile.read(star)
    after = starfile.read(result.star_path)
    assert after["optics"]["rlnImagePixelSize"].tolist() == [3.0]
    assert after["optics"]["rlnImageSize"].tolist() == [24]
    assert after["particles"]["rlnImageName"].tolist() == [f"{i:06d}@particles.24.mrcs"
                                                           for i in range(1, 61)]
    unchanged = [c for c in before["particles"].columns if c != "rlnImageName"]
    assert list(after["particles"].columns) == list(before["particles"].columns)
    pd.testing.assert_frame_equal(after["particles"][unchanged], before["particles"][unchanged])


def test_target_pixel_size_gives_even_box_and_real_pixel_size(tmp_path, star):
    result = downsample_file(star, tmp_path / "out", pixel_size_a=4.0)  # 48·1.5/4 = 18
    assert result.table.optics["box_px"].tolist() == [18]
    assert result.table.optics["pixel_size_a"].tolist() == [1.5 * 48 / 18]
    result = downsample_file(star, tmp_path / "out2", pixel_size_a=3.3)  # 21.8 → 22
    assert result.table.optics["pixel_size_a"].tolist() == [1.5 * 48 / 22]


@pytest.mark.real_data
def test_six_optics_groups_each_get_their_own_pixel_size(real_data_dir, tmp_path):
    source = real_data_dir / "cryodrgn/relion31.6opticsgroups.star"
    table = read_particles_star(source)
    # a synthetic stack for every referenced stack path, at the declared 196 px: sparse files
    # with only the referenced images filled in
    rng = np.random.default_rng(6)
    for path, rows in table.particles.groupby("image_path"):
        target = tmp_path / "data" / os.path.relpath(path, source.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        count = int(rows["image_index"].max()) + 1
        with mrcfile.new_mmap(target, shape=(count, 196, 196), mrc_mode=2) as mrc:
            mrc.set_image_stack()
            mrc.voxel_size = 1.25
            for index in rows["image_index"]:
                mrc.data[index] = rng.normal(size=(196, 196))
    result = downsample_file(source, tmp_path / "out", box_px=64, datadir=tmp_path / "data")
    before = starfile.read(source)
    after = starfile.read(result.star_path)
    expected = {1: 1.25, 2: 1.24, 3: 1.25, 4: 1.25, 5: 1.24, 6: 1.25}
    for _, row in after["optics"].iterrows():
        assert row["rlnImagePixelSize"] == expected[row["rlnOpticsGroup"]] * 196 / 64
        assert row["rlnImageSize"] == 64
    assert list(after["optics"].columns) == list(before["optics"].columns)
    for column in ("rlnOddZernike", "rlnBeamTiltX", "rlnMicrographPixelSize", "rlnMagMat00"):
        assert after["optics"][column].tolist() == before["optics"][column].tolist()
    keep = [c for c in before["particles"].columns if c != "rlnImageName"]
    assert list(after["particles"].columns) == list(before["particles"].columns)
    pd.testing.assert_frame_equal(after["particles"][keep], before["particles"][keep])


def test_relion30_pixel_origins_are_rescaled_and_written_in_angstrom(tmp_path):
    write_mrc(tmp_path / "s.mrcs", np.random.default_rng(1).normal(size=(2, 32, 32)), 2.0,
              volume=False)
    starfile.write(pd.DataFrame({
        "rlnImageName": ["1@s.mrcs", "2@s.mrcs"], "rlnOriginX": [3.0, -1.0],
        "rlnOriginY": [0.5, 2.0], "rlnDetectorPixelSize": [5.0] * 2,
        "rlnMagnification": [25000.0] * 2, "rlnVoltage": [300.0] * 2}), tmp_path / "p.star")
    result = downsample_file(tmp_path / "p.star", tmp_path / "out", box_px=16)
    after = starfile.read(result.star_path)
    new_pixel = after["optics"]["rlnImagePixelSize"].iloc[0]
    assert new_pixel == 4.0
    assert "rlnMagnification" not in after["optics"]  # would contradict the new pixel size
    origins_px_new = after["particles"]["rlnOriginXAngst"] / new_pixel
    np.testing.assert_allclose(origins_px_new, np.array([3.0, -1.0]) * 16 / 32)  # × d/D
    np.testing.assert_allclose(after["particles"]["rlnOriginXAngst"], [6.0, -2.0])


@pytest.mark.real_data
def test_cs_input_becomes_a_relion31_star(real_data_dir, tmp_path):
    result = downsample_file(real_data_dir / "cryodrgn/empiar_10076_7.cs", tmp_path / "out",
                             box_px=64)
    after = starfile.read(result.star_path)
    assert after["optics"]["rlnImageSize"].tolist() == [64]
    assert after["optics"]["rlnImagePixelSize"].iloc[0] == pytest.approx(1.31 * 320 / 64,
                                                                         rel=1e-4)
    assert "rlnDefocusU" in after["particles"] and len(after["particles"]) == 7
    source = read_images(real_data_dir / "cryodrgn/empiar_10076_7.mrc")
    np.testing.assert_allclose(read_images(result.stack_path), fourier_crop(source, 64),
                               rtol=0, atol=1e-5 * np.abs(source).max())


def test_mrcs_input_writes_a_minimal_star(tmp_path):
    write_mrc(tmp_path / "s.mrcs", np.zeros((3, 20, 20)), 1.2, volume=False)
    result = downsample_file(tmp_path / "s.mrcs", tmp_path / "out", box_px=10)
    after = starfile.read(result.star_path)
    assert after["optics"]["rlnImagePixelSize"].tolist() == [2.4]
    assert after["particles"]["rlnImageName"].tolist()[-1] == "000003@particles.10.mrcs"


@pytest.mark.parametrize("box, message", [(25, "odd"), (50, "exceeds the input box 48")])
def test_bad_box_writes_nothing(tmp_path, star, box, message):
    with pytest.raises(ParamError, match=message):
        downsample_file(star, tmp_path / "out", box_px=box)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch_size", [0, 100_001, 2**70])
def test_batch_size_out_of_range_writes_nothing(tmp_path, star, batch_size):
    with pytest.raises(ParamError, match=f"--batch-size={batch_size} must be from 1 to 100,000"):
        downsample_file(star, tmp_path / "out", box_px=24, batch_size=batch_size)
    assert not (tmp_path / "out").exists()


def test_bad_stacks_and_missing_pixel_size_write_nothing(tmp_path):
    write_mrc(tmp_path / "a.mrcs", np.zeros((2, 16, 16)), 1.0, volume=False)
    write_mrc(tmp_path / "b.mrcs", np.zeros((2, 8, 8)), 1.0, volume=False)
    write_mrc(tmp_path / "rect.mrcs", np.zeros((2, 8, 16)), 1.0, volume=False)
    write_mrc(tmp_path / "nopix.mrcs", np.zeros((2, 16, 16)), 0.0, volume=False)

    def star(names, pixel=1.0):
        optics = {"rlnOpticsGroup": [1]}
        if pixel:
            optics["rlnImagePixelSize"] = [pixel]
        starfile.write({"optics": pd.DataFrame(optics),
                        "particles": pd.DataFrame({"rlnImageName": names,
                                                   "rlnOpticsGroup": [1] * len(names)})},
                       tmp_path / "p.star", overwrite=True)
        return tmp_path / "p.star"

    cases = [
        ((["1@a.mrcs", "1@x.mrcs", "2@y.mrcs"], 1.0), r"2 referenced image stack\(s\) not found"),
        ((["1@a.mrcs", "1@b.mrcs"], 1.0), "mixes box sizes 16 and 8"),
        ((["1@rect.mrcs"], 1.0), "must be square"),
        ((["1@nopix.mrcs"], None), "rlnImagePixelSize.*--input-pixel-size"),
    ]
    for (names, pixel), message in cases:
        with pytest.raises(InputError, match=message):
            downsample_file(star(names, pixel), tmp_path / "out", box_px=8)
        assert not (tmp_path / "out").exists()
    write_mrc(tmp_path / "t.mrcs", np.zeros((2, 16, 16)), 1.0, volume=False)
    (tmp_path / "t.mrcs").write_bytes((tmp_path / "t.mrcs").read_bytes()[:-8])
    with pytest.raises(InputError, match=r"t\.mrcs: truncated.*expected|t\.mrcs: truncated"):
        downsample_file(star(["1@t.mrcs"]), tmp_path / "out", box_px=8)
    assert not (tmp_path / "out").exists()


def test_a_failure_after_the_stack_is_computed_leaves_no_output(tmp_path, star):
    """The STAR cannot be put in place (a folder has its name): neither file is left."""
    out = tmp_path / "out"
    (out / "particles.24.star").mkdir(parents=True)
    with pytest.raises(OSError):
        downsample_file(star, out, box_px=24)
    assert [p.name for p in out.iterdir()] == ["particles.24.star"]


def test_pixels_do_not_depend_on_how_a_job_is_split_for_the_ffts(tmp_path, star, monkeypatch):
    from cryoweave.protocols.downsample import _stack

    monkeypatch.setattr(_stack, "FFT_CHUNK_BYTES", 3 * 48 * 48 * 4)  # 3 images, 32 per job
    result = downsample_file(star, tmp_path / "out", box_px=24, threads=2)
    source = read_images(tmp_path / "data" / "particles.mrcs")
    np.testing.assert_array_equal(read_images(result.stack_path), fourier_crop(source, 24))


def test_cpu_jobs_are_written_in_order_from_a_bounded_set_of_buffers(tmp_path, star,
                                                                      monkeypatch):
    """The calling thread writes while two workers crop ahead by at most WINDOW jobs each:
    15 jobs of 4 images go through at most 2·2 output buffers in flight and the one being
    written, in order, pixels exact."""
    from cryoweave.formats import StackWriter
    from cryoweave.protocols.downsample import _stack

    monkeypatch.setattr(_stack, "JOB_IMAGES", 4)
    monkeypatch.setattr(_stack, "WINDOW", 2)
    written, buffers, writers = [], set(), set()
    real_write = StackWriter.write

    def spy(self, start, images):
        written.append(start)
        buffers.add(id(images.base if images.base is not None else images))
        writers.add(threading.get_ident())
        time.sleep(0.002)  # a slow disk: the workers get ahead as far as they may
        return real_write(self, start, images)

    monkeypatch.setattr(StackWriter, "write", spy)
    result = downsample_file(star, tmp_path / "out", box_px=24, threads=2)
    source = read_images(tmp_path / "data" / "particles.mrcs")
    np.testing.assert_array_equal(read_images(result.stack_path), fourier_crop(source, 24))
    assert written == list(range(0, 60, 4))
    assert 1 <= len(buffers) <= 5
    assert writers == {threading.get_ident()}


def test_a_failing_cpu_job_stops_the_others_and_leaves_no_output(tmp_path, star, monkeypatch):
    from cryoweave.protocols.downsample import _stack

    monkeypatch.setattr(_stack, "JOB_IMAGES", 4)
    calls = []
    real_crop = _stack.fourier_crop

    def crop(images, box_px, **kwargs):
        calls.append(len(images))
        if len(calls) == 6:
            raise OSError("the disk went away")
        return real_crop(images, box_px, **kwargs)

    monkeypatch.setattr(_stack, "fourier_crop", crop)
    with pytest.raises(OSError, match="the disk went away"):
        downsample_file(star, tmp_path / "out", box_px=24, threads=2)
    assert not (tmp_path / "out").exists()
    assert len(calls) < 15  # the jobs not yet started were dropped


@pytest.mark.parametrize("failing", ["write_star_blocks", "downsample_stack"])
def test_a_failure_of_either_concurrent_writer_leaves_no_output(tmp_path, star, monkeypatch,
                                                               failing):
    """The STAR is written while the stack is computed; whichever fails, neither is left."""
    from cryoweave.protocols.downsample import _files

    real = getattr(_files, failing)

    def fail(*args, **kwargs):
        real(*args, **kwargs)  # the file is (being) written, then the step fails
        raise OSError(f"{failing} failed")

    monkeypatch.setattr(_files, failing, fail)
    with pytest.raises(OSError, match=failing):
        downsample_file(star, tmp_path / "out" / "nested", box_px=24)
    assert not (tmp_path / "out").exists()


def test_a_failed_cli_downsample_removes_the_project_and_folder_it_created(tmp_path, star,
                                                                          capsys):
    from cryoweave.cli import main

    with pytest.raises(SystemExit) as done:
        main(["downsample", str(star), "-D", "25", "-o", str(tmp_path / "out"),
              "--project", str(tmp_path / "proj")])
    assert done.value.code == 2
    assert "error: box_px=25 is odd" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "proj").exists()


def test_project_cache_reuse_and_invalidation(tmp_path):
    star = write_particles(tmp_path, 2500, 192, 1.0, np.random.default_rng(3))
    cache = tmp_path / "Cache"
    first = downsample_file(star, tmp_path / "a", box_px=96, cache_root=cache)
    built = first.stack_path.stat()
    for name in ("b", "b2"):
        second = downsample_file(star, tmp_path / name, box_px=96, cache_root=cache)
    assert not first.cache_hit and second.cache_hit
    reused = second.stack_path.stat()  # the cached stack is served, not rebuilt (speed: bench)
    assert (reused.st_ino, reused.st_mtime_ns) == (built.st_ino, built.st_mtime_ns)
    assert first.stack_path.read_bytes() == second.stack_path.read_bytes()
    assert (tmp_path / "a/particles.96.star").read_text().split("\n", 2)[2] == \
        (tmp_path / "b/particles.96.star").read_text().split("\n", 2)[2]
    os.utime(tmp_path / "particles.mrcs", ns=(time.time_ns(), time.time_ns()))  # touch
    third = downsample_file(star, tmp_path / "c", box_px=96, cache_root=cache)
    assert not third.cache_hit
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2


def test_partial_cache_entry_is_rebuilt_and_concurrent_builders_agree(tmp_path):
    star = write_particles(tmp_path, 400, 64, 1.0, np.random.default_rng(4))
    cache = tmp_path / "Cache"
    first = downsample_file(star, tmp_path / "a", box_px=32, cache_root=cache)
    (first.stack_path.resolve())  # link in the output folder
    entry = next(p for p in cache.iterdir() if not p.name.startswith("."))
    (entry / "manifest.json").unlink()  # as if a builder had died before finishing
    again = downsample_file(star, tmp_path / "b", box_px=32, cache_root=cache)
    assert not again.cache_hit and (entry / "manifest.json").exists()

    results, errors = [], []

    def build(name):
        try:
            results.append(downsample_file(star, tmp_path / name, box_px=16, cache_root=cache))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(f"c{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(not r.cache_hit for r in results) == 1
    contents = {r.stack_path.read_bytes() for r in results}
    assert len(contents) == 1
    np.testing.assert_array_equal(read_images(results[0].stack_path),
                                  fourier_crop(read_images(tmp_path / "particles.mrcs"), 16))


def test_protocol_keeps_ids_uses_the_cache_and_exports(tmp_path, star):
    project, first = run_protocol(tmp_path / "proj", registry().get("Downsample"),
                                  {"particles": str(star), "box_px": 24})
    assert first.status == "finished", first.error
    out = ParticleSet(project, first.outputs["particles"])
    source = ParticleSet(project, 1)
    assert out.item_ids().tolist() == source.item_ids().tolist()
    assert out.properties["pixel_size_a"] == 3.0 and out.properties["box_px"] == 24
    frame = out.to_frame()
    np.testing.assert_array_equal(frame["rot_deg"], source.to_frame()["rot_deg"])
    images = read_images(frame["image_path"].iloc[0], frame["image_index"].to_numpy())
    np.testing.assert_array_equal(
        images, fourier_crop(read_images(tmp_path / "data/particles.mrcs"), 24))
    _, second = run_protocol(tmp_path / "proj", registry().get("Downsample"),
                             {"particles": {"run": 1, "output": "particles"}, "box_px": 24})
    with project.reader() as s:
        from cryoweave.store.schema import StepRow

        info = s.query(StepRow).filter_by(run_id=second.run_id).one().result
    assert info["cache_hit"] is True
    with pytest.raises(ParamError, match="exceeds the input box 48"):
        run_protocol(tmp_path / "proj", registry().get("Downsample"),
                     {"particles": {"run": 1, "output": "particles"}, "box_px": 64})
