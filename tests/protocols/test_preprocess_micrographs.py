"""PreprocessMicrographs: validation, bookkeeping, failures of single micrographs."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine import PreprocessSettings, preprocess_micrographs
from cryoweave.errors import ParamError
from cryoweave.formats import read_image, read_info, write_mrc
from cryoweave.plugin import registry
from cryoweave.store import MicrographSet
from cryoweave.store.schema import Event
from cryoweave.workflow import run_protocol


@pytest.fixture
def imported(tmp_path):
    folder = tmp_path / "mics"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_mrc(folder / f"m{i}.mrc", rng.normal(50, 3, (120, 150)), 1.25)
    _project, summary = run_protocol(tmp_path / "p", registry().get("ImportMicrographs"),
                                    {"pattern": str(folder / "*.mrc"), "voltage_kv": 200})
    return tmp_path / "p", {"run": summary.run_id, "output": "micrographs"}


def preprocess(project_dir, **params):
    return run_protocol(project_dir, registry().get("PreprocessMicrographs"), params)


def test_outputs_equal_the_engine_chain_with_bookkeeping(imported):
    project_dir, ref = imported
    params = {"do_crop": True, "crop_px": 5, "do_invert": True, "do_downsample": True,
              "downsample_factor": 2.5, "do_lowpass": True, "lowpass_cutoff": 0.3,
              "lowpass_width": 0.05, "do_normalize": True}
    project, summary = preprocess(project_dir, micrographs=ref, **params)
    assert summary.status == "finished", summary.error
    out = MicrographSet(project, summary.outputs["micrographs"])
    frame = out.to_frame().sort_values("item_id")
    source = MicrographSet(project, 1).to_frame().sort_values("item_id")
    assert frame["item_id"].tolist() == source["item_id"].tolist()
    assert out.properties["voltage_kv"] == 200 and out.is_closed
    # 150-10=140 → 56 columns, 120-10=110 → 44 rows: true pixel sizes 1.25·140/56, 1.25·110/44
    assert frame["width_px"].tolist() == [56] * 3 and frame["height_px"].tolist() == [44] * 3
    assert frame["pixel_size_a"].tolist() == [1.25 * 140 / 56] * 3
    assert "pixel_size_y_a" not in frame  # 140/56 = 110/44 = 2.5
    for path_in, path_out in zip(source["path"], frame["path"], strict=True):
        expected, _ = preprocess_micrographs(read_image(path_in)[0],
                                             PreprocessSettings(**params))
        np.testing.assert_array_equal(read_image(path_out)[0], expected)
        assert read_info(path_out).voxel_size_a == pytest.approx(3.125)


def test_crop_keeps_pixel_size_and_non_square_factors_are_both_recorded(imported):
    project_dir, ref = imported
    project, summary = preprocess(project_dir, micrographs=ref, do_crop=True, crop_px=3)
    frame = MicrographSet(project, summary.outputs["micrographs"]).to_frame()
    assert frame["pixel_size_a"].tolist() == [1.25] * 3 and frame["width_px"].iloc[0] == 144
    project, summary = preprocess(project_dir, micrographs=ref, do_downsample=True,
                                  downsample_factor=4.0)  # 150→37, 120→30
    frame = MicrographSet(project, summary.outputs["micrographs"]).to_frame()
    assert frame["pixel_size_a"].iloc[0] == pytest.approx(1.25 * 150 / 37)
    assert frame["pixel_size_y_a"].iloc[0] == pytest.approx(1.25 * 120 / 30)


@pytest.mark.parametrize("params, message", [
    ({}, "no operation is enabled"),
    ({"do_lowpass": True, "lowpass_cutoff": 0.6}, "lowpass_cutoff"),
    ({"do_highpass": True, "highpass_cutoff": 0.3, "do_lowpass": True, "lowpass_cutoff": 0.2},
     "nothing would pass"),
    ({"do_downsample": True, "downsample_factor": 1.0}, "downsample_factor"),
    ({"do_crop": True, "crop_px": 70}, "smallest micrograph is 150×120"),
    ({"do_downsample": True, "downsample_factor": 60.0}, "smallest micrograph is 150×120"),
])
def test_validation_names_the_parameter(imported, params, message):
    project_dir, ref = imported
    with pytest.raises(ParamError, match=message):
        preprocess(project_dir, micrographs=ref, **params)


def test_a_bad_micrograph_is_recorded_and_the_rest_processed(tmp_path):
    folder = tmp_path / "mics"
    folder.mkdir()
    write_mrc(folder / "a.mrc", np.full((64, 64), 10.0), 1.0)
    write_mrc(folder / "b.mrc", np.full((64, 64), -400.0), 1.0)  # log(x + 336.6) undefined
    write_mrc(folder / "c.mrc", np.full((64, 64), 20.0), 1.0)
    project, summary = run_protocol(tmp_path / "p", registry().get("ImportMicrographs"),
                                    {"pattern": str(folder / "*.mrc")})
    (folder / "c.mrc").write_bytes((folder / "c.mrc").read_bytes()[:-40])  # truncated later
    project, summary = preprocess(tmp_path / "p", micrographs={"run": 1, "output":
                                                                "micrographs"}, do_log=True)
    assert summary.status == "finished"
    out = MicrographSet(project, summary.outputs["micrographs"])
    assert out.item_ids().tolist() == [1] and out.is_closed
    with project.reader() as s:
        failures = {e.data["item_id"]: e.message
                    for e in s.query(Event).filter_by(run_id=summary.run_id, kind="item_failed")}
    assert set(failures) == {2, 3}
    assert "b.mrc" in failures[2] and "log" in failures[2].lower()
    assert "c.mrc: truncated" in failures[3]
