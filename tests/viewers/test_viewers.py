"""Viewers render what the data holds (checked on the pictures' content)."""

from __future__ import annotations

import matplotlib.image
import matplotlib.pyplot
import numpy as np
import pytest

from cryoweave.demo.synthetic import write_micrographs
from cryoweave.engine import atoms_phantom
from cryoweave.formats import write_mrc
from cryoweave.plugin import registry
from cryoweave.store import MicrographSet, VolumeSet
from cryoweave.viewers import _sets as sets_module
from cryoweave.viewers import (
    central_slices,
    gallery_figure,
    montage,
    plot_volume,
    power_spectrum,
    show_spectrum,
    spectrum_figure,
    stretch,
    thumbnail,
    volume_figure,
)
from cryoweave.viewers._sets import view_set
from cryoweave.viewers._volumes import nice_length
from cryoweave.workflow import run_protocol


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


def test_view_micrographs_names_titles_and_captions(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    write_micrographs(tmp_path / "m", 3, (300, 320), 1.0, np.random.default_rng(0))
    project, _ = run_protocol(tmp_path / "p", registry().get("ImportMicrographs"),
                              {"pattern": str(tmp_path / "m" / "*.mrc")}, label="session")
    titles = []
    real_sheet = sets_module.contact_sheet

    def spy(*args, **kwargs):
        titles.append(kwargs["title"])
        return real_sheet(*args, **kwargs)

    monkeypatch.setattr(sets_module, "contact_sheet", spy)
    written = view_set(MicrographSet(project, 1), tmp_path / "view")
    names = {p.name for p in written}
    assert {"session_micrographs_contact_sheet.png", "session_micrographs_power_spectra.png",
            "index.html", "session_micrographs_mic_000_thumb.png",
            "session_micrographs_mic_002_psd.png"} <= names
    assert titles == ["session.micrographs: 3 micrographs", "session.micrographs: power spectra"]
    thumb = matplotlib.image.imread(tmp_path / "view" / "session_micrographs_mic_000_thumb.png")
    assert thumb.shape[:2] == (300, 320)
    index = (tmp_path / "view" / "index.html").read_text()
    assert "<h1>session.micrographs (micrographs set, 3 items)</h1>" in index
    assert "session.micrographs: contact sheet of the first 3 micrographs" in index
    assert "power spectrum of micrograph #1 mic_000" in index and "rings labelled in Å" in index
    project.close()


def test_volume_figure_panels_titles_planes_and_scale_bar(tmp_path):
    volume = atoms_phantom(48, 2.0, n_atoms=30)
    for mode, word in (("slices", "section"), ("projections", "projection")):
        figure = volume_figure(volume, 2.0, title="rec.volume map", mode=mode)
        assert figure._suptitle.get_text().startswith("rec.volume map — ")
        assert "48 px at 2 Å/px" in figure._suptitle.get_text()
        axes = figure.axes
        assert [ax.get_title() for ax in axes] == [f"{p} {word}" for p in ("XY", "XZ", "YZ")]
        assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in axes] == [
            ("x", "y"), ("x", "z"), ("y", "z")]
        figure.canvas.draw()
        for ax in axes:
            box = ax.get_window_extent()
            assert min(box.width, box.height) >= 256  # pixels at the saving dpi (100)
            # scale bar: 0.3 × 96 Å → 20 Å, drawn 20 / 2 = 10 pixels long
            assert [t.get_text() for t in ax.texts] == ["20 Å"]
            (bar,) = ax.lines
            assert np.ptp(bar.get_xdata()) == pytest.approx(10.0)
        matplotlib.pyplot.close(figure)
    path = plot_volume(volume, 2.0, tmp_path / "v.png", title="v")
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width >= 3 * 256 and height >= 256


def test_nice_scale_bar_lengths():
    assert [nice_length(v) for v in (28.8, 9.9, 150, 1.0, 0.7)] == [20, 5, 100, 1, 0.5]


def test_spectrum_rings_sit_at_their_resolution(tmp_path):
    """A cosine of period 6 Å at 1 Å/px peaks on the ring labelled 6 Å (radius 256·1/6)."""
    _, x = np.indices((512, 512))
    image = np.cos(2 * np.pi * x / 6.0).astype(np.float32)
    spectrum = power_spectrum(image, 256)
    row, col = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    peak_radius = np.hypot(row - 128, col - 128)
    figure = spectrum_figure(show_spectrum(spectrum), 1.0, title="mic: power spectrum")
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["15 Å", "6 Å", "3.5 Å", "2 Å"] and ax.get_title() == "mic: power spectrum"
    radii = {label: patch.get_radius() for label, patch in zip(labels, ax.patches, strict=True)}
    assert radii["2 Å"] == pytest.approx(128)  # Nyquist at the tile's edge
    assert abs(radii["6 Å"] - peak_radius) < 1.0
    matplotlib.pyplot.close(figure)


def test_gallery_numbers_particles_by_id():
    images = np.random.default_rng(0).normal(size=(3, 16, 16))
    figure = gallery_figure(images, [101, 205, 7], title="sel.particles")
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert texts == ["101", "205", "7"]
    # each number sits in its own tile's top-left corner (tiles 16 + 2 px apart)
    assert [t.get_position() for t in figure.axes[0].texts] == [(1, 1), (19, 1), (37, 1)]
    matplotlib.pyplot.close(figure)


def test_view_volume_files_named_after_the_run(tmp_path):
    write_mrc(tmp_path / "map.mrc", atoms_phantom(32, 2.0, n_atoms=20), 2.0)
    project, summary = run_protocol(tmp_path / "p", registry().get("ImportVolume"),
                                    {"path": str(tmp_path / "map.mrc")}, label="start")
    handle = VolumeSet(project, summary.outputs["volume"])
    written = view_set(handle, tmp_path / "view")
    assert [p.name for p in written] == ["start_volume_slices.png",
                                         "start_volume_projections.png", "index.html"]
    index = written[-1].read_text()
    assert "start.volume: map, central sections in the XY, XZ and YZ planes (32 px at 2 " \
           "Å/px)" in index
    project.close()
