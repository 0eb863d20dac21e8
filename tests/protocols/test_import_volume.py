"""ImportVolume."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.plugin import registry
from cryoweave.workflow import VolumeSet
from cryoweave.workflow._submit import run_protocol


def import_volume(tmp_path, **params):
    return run_protocol(tmp_path / "p", registry().get("ImportVolume"), params)


@pytest.mark.real_data
def test_odd_box_without_header_pixel_size(real_data_dir, tmp_path):
    path = str(real_data_dir / "aspire/clean70SRibosome_vol_65p.mrc")
    project, summary = import_volume(tmp_path, path=path)
    assert summary.status == "failed"
    assert "no pixel size" in summary.error and "pixel_size_a" in summary.error
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
    _, summary = import_volume(tmp_path, path=str(tmp_path / "flat.mrc"))
    assert summary.status == "failed" and "cubic" in summary.error
