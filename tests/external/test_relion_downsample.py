"""Downsample against RELION's own: ``relion_image_handler --i in.star --rescale_angpix``."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import starfile

from cryoweave.demo.synthetic import write_particles
from cryoweave.formats import read_images
from cryoweave.protocols.downsample import downsample_file

pytestmark = [
    pytest.mark.external,
    pytest.mark.skipif(shutil.which("relion_image_handler") is None,
                       reason="RELION not installed (apt-get install -y relion)"),
]


@pytest.mark.parametrize("box_in, box_out", [(256, 128), (200, 64), (96, 60)])
def test_matches_relion_image_handler(tmp_path, box_in, box_out):
    pixel_in = 1.0
    star = write_particles(tmp_path, 50, box_in, pixel_in, np.random.default_rng(box_in))
    pixel_out = pixel_in * box_in / box_out
    subprocess.run(["relion_image_handler", "--i", star.name, "--o", "down",
                    "--rescale_angpix", repr(pixel_out)], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    theirs = read_images(tmp_path / "particles_down.mrcs")
    relion_star = starfile.read(tmp_path / "particles_down.star")
    assert relion_star["optics"]["rlnImageSize"].iloc[0] == box_out
    result = downsample_file(star, tmp_path / "ours", box_px=box_out)
    ours = read_images(result.stack_path)
    assert ours.shape == theirs.shape
    relative = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert relative < 2e-6, relative  # RELION computes in double, we in float32
    ours_star = starfile.read(result.star_path)
    assert ours_star["optics"]["rlnImagePixelSize"].iloc[0] == pytest.approx(
        relion_star["optics"]["rlnImagePixelSize"].iloc[0], rel=1e-6)
