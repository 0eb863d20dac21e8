"""`cryoweave demo --quick` produces what it claims."""

from __future__ import annotations

import pytest
from rich.console import Console

from cryoweave.demo import run_demo
from cryoweave.errors import CryoweaveError
from cryoweave.store import Project, set_handle
from cryoweave.store.schema import SetRow


def test_quick_demo(tmp_path):
    console = Console(file=open(tmp_path / "out.txt", "w"), width=200)  # noqa: SIM115
    run_demo(tmp_path / "demo", console=console, quick=True)
    console.file.close()
    text = (tmp_path / "out.txt").read_text()
    assert "contact sheet" in text
    with Project.open(tmp_path / "demo") as project:
        runs = {r.label: r for r in project.list_runs()}
        assert all(r.status == "finished" for r in runs.values())
        # the refinement starts from the truth low-passed by ProcessVolume
        assert runs["start-map"].protocol == "cryoweave:ProcessVolume"
        assert runs["start-map"].params["lowpass_resolution_a"] == 30.0
        with project.reader() as s:
            sets = {(s.get(SetRow, row.id).run_id): row for row in s.query(SetRow)}
        preprocessed = set_handle(project, sets[runs["preprocess"].id].id)
        downsampled = set_handle(project, sets[runs["downsample"].id].id)
        assert preprocessed.count() == 4 and preprocessed.properties["pixel_size_a"] == 2.0
        assert downsampled.count() == 200 and downsampled.properties["pixel_size_a"] == 4.0
    assert (tmp_path / "demo/Runs/000002_PreprocessMicrographs/extra/view/"
            "preprocess_micrographs_contact_sheet.png"
            ).exists()
    with pytest.raises(CryoweaveError, match="was not made by"):
        (tmp_path / "other").mkdir()
        run_demo(tmp_path / "other", console=console, quick=True)
