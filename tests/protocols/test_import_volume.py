"""ImportVolume."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.errors import ParamError
from cryoweave.plugin import registry
from cryoweave.store import Project, VolumeSet
from cryoweave.workflow import run_protocol


def import_volume(tmp_path, **params):
    return run_protocol(tmp_path / "p", registry().get("ImportVolume"), params)


@pytest.mark.real_data
def test_odd_box_without_header_pixel_size(real_data_dir, tmp_path):
    path = str(real_data_dir / "aspire/clean70SRibosome_vol_65p.mrc")
    with pytest.raises(ParamError, match=r"parameter 'path': .*65p\.mrc: the MRC header has "
                                         "no pixel size.*pass pixel_size_a"):
        import_volume(tmp_path, path=path)
    assert not (tmp_path / "p").exists()  # refused before the project is created
    project, summary = import_volume(tmp_path, path=path, pixel_size_a=3.0)
    volume = VolumeSet(project, summary.outputs["volume"])
    assert volume.properties == {"pixel_size_a": 3.0, "box_px": 65}


def test_half_maps_and_non_cubic(tmp_path):
    from cryoweave.formats import write_mrc

    write_mrc(tmp_path / "v.mrc", np.zeros((8, 8, 8)), 1.0)
    write_mrc(tmp_path / "h1.mrc", np.zeros((8, 8, 8)), 1.0)
    write_mrc(tmp_path / "h2.mrc", np.zeros((8, 8, 8)), 1.0)
    write_mrc(tmp_path / "flat.mrc", np.zeros((4, 8, 8)), 1.0, volume=True)
    project, summary = import_volume(tmp_path, path=str(tmp_path / "v.mrc"),
                                     half1_path=str(tmp_path / "h1.mrc"),
                                     half2_path=str(tmp_path / "h2.mrc"))
    row = VolumeSet(project, summary.outputs["volume"]).to_frame().iloc[0]
    assert row["half1_path"].endswith("h1.mrc") and row["box_px"] == 8
    with pytest.raises(ParamError, match=r"parameter 'path': .*flat\.mrc: the map is 8×8×4; "
                                         "cubic maps are required"):
        import_volume(tmp_path, path=str(tmp_path / "flat.mrc"))
    assert_nothing_new(tmp_path / "p", runs=1)


def assert_nothing_new(project_dir, runs):
    """The project still has ``runs`` runs and as many run folders."""
    with Project.open(project_dir) as project:
        assert len(project.list_runs()) == runs
    assert len(list((project_dir / "Runs").iterdir())) == runs


def test_non_mrc_file_is_refused_before_anything_is_created(tmp_path):
    (tmp_path / "notes.mrc").write_text("not a map")
    with pytest.raises(ParamError, match=r"parameter 'path': .*notes\.mrc: not a readable MRC"):
        import_volume(tmp_path, path=str(tmp_path / "notes.mrc"))
    assert not (tmp_path / "p").exists()
    Project.create(tmp_path / "p").close()
    with pytest.raises(ParamError, match="not a readable MRC"):
        import_volume(tmp_path, path=str(tmp_path / "notes.mrc"))
    assert_nothing_new(tmp_path / "p", runs=0)
