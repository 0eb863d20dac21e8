"""ImportParticles: STAR/.cs/.mrcs to a particle set, checks, and export back out."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoweave.demo.synthetic import write_particles
from cryoweave.errors import ParamError
from cryoweave.formats import StackWriter, write_mrc
from cryoweave.plugin import registry
from cryoweave.store import ParticleSet
from cryoweave.workflow import export_particles, run_protocol


def import_particles(project_dir, **params):
    return run_protocol(project_dir, registry().get("ImportParticles"), params)


@pytest.mark.real_data
def test_six_optics_groups_round_trip_through_a_set(real_data_dir, tmp_path):
    source = tmp_path / "in.star"
    shutil.copy(real_data_dir / "cryodrgn/relion31.6opticsgroups.star", source)
    project, summary = import_particles(tmp_path / "p", path=str(source), check_stacks=False)
    assert summary.status == "finished", summary.error
    particles = ParticleSet(project, summary.outputs["particles"])
    assert particles.count() == 139
    assert particles.properties["pixel_size_a"] is None  # two pixel sizes: per group
    assert sorted(particles.optics()["pixel_size_a"]) == [1.24, 1.24, 1.25, 1.25, 1.25, 1.25]
    export_particles(particles, tmp_path / "out.star")
    before = starfile.read(source, always_dict=True)
    after = starfile.read(tmp_path / "out.star", always_dict=True)
    for block in before:
        pd.testing.assert_frame_equal(before[block], after[block])


def test_synthetic_star_imports_with_ctf_poses_and_halves(tmp_path):
    star = write_particles(tmp_path, 40, 32, 1.5, np.random.default_rng(0))
    digest = hashlib.sha256(star.read_bytes()).hexdigest()
    project, summary = import_particles(tmp_path / "p", path=str(star))
    particles = ParticleSet(project, summary.outputs["particles"])
    props = particles.properties
    assert props["has_ctf"] and props["has_poses"] and props["pixel_size_a"] == 1.5
    assert props["box_px"] == 32 and props["voltage_kv"] == 300.0
    frame = particles.to_frame()
    assert frame["image_index"].tolist() == list(range(40))
    assert set(frame["half"]) == {1, 2}
    assert hashlib.sha256(star.read_bytes()).hexdigest() == digest  # input untouched


def test_mrcs_input_uses_header_pixel_size_or_the_param(tmp_path):
    with StackWriter(tmp_path / "s.mrcs", 5, 16, 0.0) as w:
        w.write(0, np.zeros((5, 16, 16)))
    with pytest.raises(ParamError, match=r"parameter 'path': .*s\.mrcs: no pixel size.*"
                                         "pass pixel_size_a"):
        import_particles(tmp_path / "p", path=str(tmp_path / "s.mrcs"))
    assert not (tmp_path / "p").exists()  # refused before the project is created
    project, summary = import_particles(tmp_path / "p2", path=str(tmp_path / "s.mrcs"),
                                        pixel_size_a=1.1)
    assert ParticleSet(project, summary.outputs["particles"]).properties["pixel_size_a"] == 1.1


def star_for(tmp_path, names, pixel=1.0, box=None):
    optics = {"rlnOpticsGroup": [1], "rlnImagePixelSize": [pixel]}
    if box:
        optics["rlnImageSize"] = [box]
    path = tmp_path / "p.star"
    starfile.write({"optics": pd.DataFrame(optics),
                    "particles": pd.DataFrame({"rlnImageName": names,
                                               "rlnOpticsGroup": [1] * len(names)})}, path,
                   overwrite=True)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", r"1 referenced image stack\(s\) not found: .*gone.mrcs.*datadir"),
    ("truncated", r"trunc.mrcs: truncated MRC file"),
    ("too_few", r"refers to image 9 of .*a.mrcs, which holds only 4 images"),
    ("non_square", r"images are 16×12; particles must be square"),
    ("mixed_box", r"optics group 1 mixes box sizes 16 and 8 px"),
    ("declared_box", r"declares rlnImageSize 32 but its stacks are 16 px"),
])
def test_bad_stacks_are_refused_before_anything_is_created(tmp_path, case, message):
    write_mrc(tmp_path / "a.mrcs", np.zeros((4, 16, 16)), 1.0, volume=False)
    write_mrc(tmp_path / "b.mrcs", np.zeros((4, 8, 8)), 1.0, volume=False)
    write_mrc(tmp_path / "rect.mrcs", np.zeros((4, 12, 16)), 1.0, volume=False)
    write_mrc(tmp_path / "trunc.mrcs", np.zeros((4, 16, 16)), 1.0, volume=False)
    (tmp_path / "trunc.mrcs").write_bytes((tmp_path / "trunc.mrcs").read_bytes()[:-10])
    names = {"missing": ["1@a.mrcs", "1@gone.mrcs"], "truncated": ["1@trunc.mrcs"],
             "too_few": ["9@a.mrcs"], "non_square": ["1@rect.mrcs"],
             "mixed_box": ["1@a.mrcs", "1@b.mrcs"], "declared_box": ["1@a.mrcs"]}[case]
    star = star_for(tmp_path, names, box=32 if case == "declared_box" else None)
    with pytest.raises(ParamError, match=message) as info:
        import_particles(tmp_path / "p", path=str(star))
    assert str(info.value).startswith("parameters of ImportParticles: parameter 'path': ")
    assert not (tmp_path / "p").exists()


def test_no_pixel_size_anywhere(tmp_path):
    write_mrc(tmp_path / "a.mrcs", np.zeros((2, 8, 8)), 0.0, volume=False)
    path = tmp_path / "p30.star"
    starfile.write(pd.DataFrame({"rlnImageName": ["1@a.mrcs"], "rlnDefocusU": [1e4]}), path)
    with pytest.raises(ParamError, match=r"no pixel size.*rlnImagePixelSize.*pass pixel_size_a"):
        import_particles(tmp_path / "p", path=str(path))
    assert not (tmp_path / "p").exists()


def test_bad_params_create_nothing(tmp_path):
    with pytest.raises(ParamError) as info:
        import_particles(tmp_path / "p", path=str(tmp_path / "none.star"), pixel_size_a=0,
                         colour="red")
    assert len(info.value.problems) == 2
    assert not (tmp_path / "p").exists()
    with pytest.raises(ParamError, match=r"none\.star not found"):
        import_particles(tmp_path / "p", path=str(tmp_path / "none.star"))
    with pytest.raises(ParamError, match="not a particle file"):
        import_particles(tmp_path / "p", path=str(tmp_path / "x.txt"))
    assert not (tmp_path / "p").exists()
