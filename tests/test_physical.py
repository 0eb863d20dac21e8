"""Physical ranges: declared on every protocol parameter, shown in the form, enforced."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cryoweave.cli import main
from cryoweave.errors import InputError, ParamError
from cryoweave.formats import ParticleTable
from cryoweave.physical import CS_MM, PIXEL_SIZE_A, VOLTAGE_KV, PhysicalRange
from cryoweave.plugin import registry
from cryoweave.protocols._shared.particle_arrays import uniform_grid_problem
from cryoweave.protocols.downsample._rewrite import downsampled_table, target_box
from cryoweave.workflow import validate_run

# units (and unit-less names) of physical quantities: each must have a finite range
PHYSICAL_UNITS = {"Å", "kV", "mm"}
PHYSICAL_NAMES = {"amplitude_contrast", "regularization", "snr"}


def _limits(prop: dict) -> tuple[object, object]:
    options = [prop, *prop.get("anyOf", [])]
    low = next((o.get("minimum", o.get("exclusiveMinimum")) for o in options
                if "minimum" in o or "exclusiveMinimum" in o), None)
    high = next((o.get("maximum", o.get("exclusiveMaximum")) for o in options
                 if "maximum" in o or "exclusiveMaximum" in o), None)
    return low, high


def _number(prop: dict) -> bool:
    options = [prop, *prop.get("anyOf", [])]
    return any(o.get("type") == "number" for o in options)


def test_every_physical_parameter_of_every_protocol_declares_a_finite_range():
    checked = []
    for protocol in registry().protocols():
        for name, prop in protocol.form_schema()["properties"].items():
            if not _number(prop):
                continue
            if prop.get("unit") in PHYSICAL_UNITS or name in PHYSICAL_NAMES:
                low, high = _limits(prop)
                assert low is not None and high is not None, (protocol.__name__, name, prop)
                assert np.isfinite([low, high]).all()
                checked.append(f"{protocol.__name__}.{name}")
    assert {"ImportParticles.pixel_size_a", "SimulateParticles.cs_mm",
            "SimulateParticles.voltage_kv", "ReconstructFourier.max_resolution_a",
            "ReconstructFourier.regularization", "ReconstructHighRes.regularization",
            "ImportMicrographs.voltage_kv"} <= set(checked)


def test_the_form_shows_the_range(capsys):
    main(["form", "SimulateParticles"])
    schema = json.loads(capsys.readouterr().out)
    cs = schema["properties"]["cs_mm"]
    assert (cs["minimum"], cs["maximum"]) == (CS_MM.low, CS_MM.high)
    assert schema["properties"]["voltage_kv"]["maximum"] == VOLTAGE_KV.high


@pytest.mark.parametrize("protocol,raw,key", [
    ("SimulateParticles", '{"phantom": true, "cs_mm": Infinity}', "cs_mm"),
    ("SimulateParticles", '{"phantom": true, "voltage_kv": 1e308}', "voltage_kv"),
    ("SimulateParticles", '{"phantom": true, "pixel_size_a": 1e400}', "pixel_size_a"),
    ("SimulateParticles", '{"phantom": true, "defocus_range_a": [1000, 1e308]}',
     "defocus_range_a"),
    ("ImportParticles", '{"path": "p.star", "pixel_size_a": 1e308}', "pixel_size_a"),
    ("ImportParticles", '{"path": "p.star", "pixel_size_a": 0}', "pixel_size_a"),
    ("ReconstructFourier", '{"particles": "p.star", "regularization": 1e308}',
     "regularization"),
    ("ReconstructFourier", '{"particles": "p.star", "max_resolution_a": Infinity}',
     "max_resolution_a"),
    ("ReconstructHighRes", '{"particles": "p.star", "max_target_resolution_a": "15 inf"}',
     "max_target_resolution_a"),
    ("ImportMicrographs", '{"pattern": "m/*.mrc", "streaming": true, "file_settle_s": 1e308}',
     "file_settle_s"),
    ("ImportMicrographs", '{"pattern": "m/*.mrc", "streaming": true, "timeout_s": 1e308}',
     "timeout_s"),
    ("PreprocessMicrographs", '{"micrographs": "m/*.mrc", "do_lowpass": true, '
     '"lowpass_width": 1e308}', "lowpass_width"),
    ("PreprocessMicrographs", '{"micrographs": "m/*.mrc", "do_highpass": true, '
     '"highpass_width": 0.6}', "highpass_width"),
    ("ReconstructHighRes", '{"particles": "p.star", "local_gray": true, '
     '"local_max_gray_offset_sigma": 1e308}', "local_max_gray_offset_sigma"),
    # values the malformed-input campaign (2**70, 1e308) saw accepted
    ("ReconstructHighRes", '{"particles": "p.star", "particle_radius_px": 1180591620717411303424}',
     "particle_radius_px"),
    ("ReconstructHighRes", '{"particles": "p.star", "iterations": 1180591620717411303424}',
     "iterations"),
    ("ReconstructFourier", '{"particles": "p.star", "batch_size": 1180591620717411303424}',
     "batch_size"),
    ("ReconstructFourier", '{"particles": "p.star", '
     '"gridding_iterations": 1180591620717411303424}', "gridding_iterations"),
    ("PreprocessMicrographs", '{"micrographs": "m/*.mrc", "do_denoise": true, '
     '"denoise_iterations": 1180591620717411303424}', "denoise_iterations"),
    ("ReconstructHighRes", '{"particles": "p.star", "alignment": "local", '
     '"local_max_shift_percent": 1e308}', "local_max_shift_percent"),
    ("Downsample", '{"particles": "p.star", "box_px": 32, "batch_size": 1e6}', "batch_size"),
    ("ImportMicrographs", '{"pattern": "m/*.mrc", "batch_size": 1180591620717411303424}',
     "batch_size"),
    ("PreprocessMicrographs", '{"micrographs": "m/*.mrc", "do_gaussian": true, '
     '"gaussian_sigma_px": 1e308}', "gaussian_sigma_px"),
    ("PreprocessMicrographs", '{"micrographs": "m/*.mrc", "do_log": true, '
     '"log_a": 1180591620717411303424}', "log_a"),
    ("PreprocessMicrographs", '{"micrographs": "m/*.mrc", "do_log": true, "log_b": -1e308}',
     "log_b"),
    ("PreprocessMicrographs", '{"micrographs": "m/*.mrc", "do_log": true, "log_c": 1e308}',
     "log_c"),
    ("PreprocessMicrographs", '{"micrographs": "m/*.mrc", "do_invert": true, '
     '"batch_size": 1180591620717411303424}', "batch_size"),
    ("PreprocessMicrographs", '{"micrographs": "m/*.mrc", "do_downsample": true, '
     '"downsample_factor": 1180591620717411303424}', "downsample_factor"),
    ("ReconstructHighRes", '{"particles": "p.star", "alignment": "stochastic", '
     '"stochastic_images_per_half": 1180591620717411303424}', "stochastic_images_per_half"),
])
def test_infinite_and_impossible_values_are_refused_before_a_run(tmp_path, protocol, raw, key):
    (tmp_path / "p.star").write_text("")
    cls = registry().get(protocol)
    with pytest.raises(ParamError, match=key):
        validate_run(None, cls, json.loads(raw), base_dir=tmp_path)


def test_range_contains_only_finite_values_inside():
    assert PIXEL_SIZE_A.contains(1.0) and PIXEL_SIZE_A.contains(0.1)
    assert not any(PIXEL_SIZE_A.contains(v) for v in (0.0, -4.0, 1e308, np.inf, np.nan))
    half_open = PhysicalRange("x", "", 0.0, 1.0, low_open=True, high_open=True)
    assert not half_open.contains(0.0) and not half_open.contains(1.0)
    assert half_open.bounds() == {"gt": 0.0, "lt": 1.0}


def _set_without_pixel_size() -> ParticleTable:
    """A particle set as a protocol sees it: from the database, no source file."""
    optics = pd.DataFrame({"group_id": [1], "name": ["g"], "pixel_size_a": [None],
                           "box_px": [32]})
    particles = pd.DataFrame({"image_path": ["/x.mrcs"], "image_index": [0],
                              "optics_group": [1]})
    return ParticleTable(particles, optics)


def test_downsample_in_a_run_names_the_params_key_not_a_cli_option(tmp_path):
    table = _set_without_pixel_size()
    with pytest.raises(InputError) as raised:
        downsampled_table(table, 16, tmp_path / "s.mrcs")
    message = str(raised.value)
    assert "params key 'pixel_size_a'" in message
    assert "--" not in message and not message.startswith("None")
    with pytest.raises(InputError, match="params key 'pixel_size_a'"):
        target_box(table, None, 4.0)


def test_reconstruction_without_a_pixel_size_is_a_problem_not_a_type_error():
    problem = uniform_grid_problem(_set_without_pixel_size().optics)
    assert problem is not None and "'pixel_size_a'" in problem


def _cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
    return int(done.value.code), capsys.readouterr().err


def test_simulate_refuses_an_infinite_cs_instead_of_writing_nan_images(tmp_path, capsys):
    code, err = _cli(["simulate", "--phantom", "-o", str(tmp_path / "out"), "-n", "4",
                      "--box", "16", "--cs", "inf"], capsys)
    assert code == 2 and "cs_mm" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.real_data
def test_simulate_from_a_map_without_pixel_size_names_the_option(real_data_dir, tmp_path,
                                                                 capsys):
    ribosome = real_data_dir / "aspire" / "clean70SRibosome_vol_65p.mrc"  # header pixel 0
    code, err = _cli(["simulate", "--volume", str(ribosome), "-o", str(tmp_path / "out"),
                      "-n", "4"], capsys)
    assert code == 2 and "pixel size 0 Å is missing or out of range" in err
    assert "--volume-pixel-size" in err and not (tmp_path / "out").exists()


def test_the_generated_docs_list_every_range_and_its_columns(tmp_path):
    from cryoweave.cli._docs import write_reference

    write_reference(tmp_path)
    index = (tmp_path / "README.md").read_text()
    assert "| pixel size | 0.1 ≤ value ≤ 100 Å | `pixel_size_a` |" in index
    assert "| magnification | 100 ≤ value ≤ 1e+07 | `rlnMagnification` |" in index
    assert "| ≥ 10.0, ≤ 1000.0 | kV |" in (tmp_path / "SimulateParticles.md").read_text()
