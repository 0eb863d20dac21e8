"""Viewers render what the data holds (checked on the pictures' content)."""

from __future__ import annotations

import matplotlib.image
import numpy as np

from cryoweave.plugin import registry
from cryoweave.synthetic import write_micrographs
from cryoweave.viewers import central_slices, montage, power_spectrum, stretch, thumbnail
from cryoweave.viewers._sets import view_set
from cryoweave.workflow import MicrographSet
from cryoweave.workflow._submit import run_protocol


def test_stretch_ignores_hot_pixels():
    image = np.random.default_rng(0).normal(size=(100, 100))
    image[0, 0] = 1e6
    out = stretch(image)
    assert out.min() == 0 and out.max() == 1
    assert 0.3 < np.median(out) < 0.7  # a single outlier does not crush the contrast


def test_thumbnail_size_and_power_spectrum_peak():
    _, x = np.indices((1024, 768))
    image = np.sin(2 * np.pi * x * 0.125).astype(np.float32)  # 0.125 cycles/px along x
    assert max(thumbnail(image, 256).shape) <= 256
    spectrum = power_spectrum(image, 256)
    row, col = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    assert row == 128 and abs(col - 128) == 32  # 0.125 × 256 pixels from the centre


def test_montage_and_slices_shapes():
    assert montage(np.zeros((12, 8, 8)), columns=5).shape == (3 * 10, 5 * 10)
    volume = np.zeros((9, 10, 11))
    volume[4, 5, 5] = 1
    slices = central_slices(volume)
    assert slices.shape == (12, 13 + 13 + 12)  # sections padded to the tallest (10) + border


def test_view_micrographs_writes_sheets_and_index(tmp_path):
    (tmp_path / "m").mkdir()
    write_micrographs(tmp_path / "m", 3, (300, 320), 1.0, np.random.default_rng(0))
    project, _ = run_protocol(tmp_path / "p", registry().get("ImportMicrographs"),
                                    {"pattern": str(tmp_path / "m" / "*.mrc")})
    written = view_set(MicrographSet(project, 1), tmp_path / "view")
    names = {p.name for p in written}
    assert {"contact_sheet.png", "power_spectra.png", "index.html",
            "000001_thumb.png", "000003_psd.png"} <= names
    thumb = matplotlib.image.imread(tmp_path / "view" / "000001_thumb.png")
    assert thumb.shape[:2] == (300, 320)
    assert "contact_sheet.png" in (tmp_path / "view" / "index.html").read_text()
