"""ImportMicrographs, once and streaming from a folder that fills during acquisition."""

from __future__ import annotations

import threading
import time

import numpy as np

from cryoweave.formats import write_mrc
from cryoweave.plugin import registry
from cryoweave.workflow import MicrographSet, Project
from cryoweave.workflow._runs import create_run, validate_run
from cryoweave.workflow._schema import Event
from cryoweave.workflow.runner import Runner, request_stop


def test_import_once_reads_headers(tmp_path):
    from cryoweave.workflow._submit import run_protocol

    for i in range(3):
        write_mrc(tmp_path / f"m{i}.mrc", np.zeros((30, 40), np.float32), 1.3)
    project, summary = run_protocol(tmp_path / "p", registry().get("ImportMicrographs"),
                                    {"pattern": str(tmp_path / "*.mrc"), "voltage_kv": 200})
    mics = MicrographSet(project, summary.outputs["micrographs"])
    frame = mics.to_frame()
    assert frame["width_px"].tolist() == [40] * 3 and frame["height_px"].tolist() == [30] * 3
    assert mics.properties["pixel_size_a"] == 1.3 and mics.properties["voltage_kv"] == 200
    assert mics.is_closed


def slow_writer(folder, n, interval_s, shape=(64, 64)):
    """Write micrographs the way a detector does: growing files, then complete ones."""
    rng = np.random.default_rng(0)
    for i in range(n):
        target = folder / f"mic_{i:03d}.mrc"
        write_mrc(folder / f".staging_{i}.mrc", rng.normal(size=shape), 1.0)
        data = (folder / f".staging_{i}.mrc").read_bytes()
        (folder / f".staging_{i}.mrc").unlink()
        with open(target, "wb") as handle:  # a file still being written, in two halves
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(interval_s / 2)
            handle.write(data[len(data) // 2:])
        time.sleep(interval_s / 2)


def test_streaming_import_skips_growing_files_and_closes_on_timeout(tmp_path):
    folder = tmp_path / "movies"
    folder.mkdir()
    project = Project.create(tmp_path / "p")
    validated = validate_run(project, registry().get("ImportMicrographs"),
                             {"pattern": str(folder / "*.mrc"), "streaming": True,
                              "timeout_s": 1.5, "file_settle_s": 0.3, "batch_size": 2})
    run_id = create_run(project, validated)
    writer = threading.Thread(target=slow_writer, args=(folder, 8, 0.25))
    writer.start()
    seen_while_writing = []

    def watch():
        mics = MicrographSet(project, 1)
        while writer.is_alive():
            seen_while_writing.append(mics.count())
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    summary = Runner(project, run_id).execute()
    writer.join()
    watcher.join()
    assert summary.status == "finished", summary.error
    mics = MicrographSet(project, 1)
    assert mics.is_closed and mics.count() == 8
    assert max(seen_while_writing) > 0, "micrographs should be published during acquisition"
    with project.reader() as s:
        assert s.query(Event).filter_by(kind="item_failed").count() == 0  # no half files
    frame = mics.to_frame()
    assert frame["item_id"].tolist() == list(range(1, 9))
    assert [p.rsplit("/", 1)[1] for p in frame["path"]] == [f"mic_{i:03d}.mrc" for i in range(8)]


def test_stop_closes_a_streaming_import(tmp_path):
    folder = tmp_path / "movies"
    folder.mkdir()
    write_mrc(folder / "a.mrc", np.zeros((8, 8)), 1.0)
    project = Project.create(tmp_path / "p")
    validated = validate_run(project, registry().get("ImportMicrographs"),
                             {"pattern": str(folder / "*.mrc"), "streaming": True,
                              "timeout_s": 600, "file_settle_s": 0})
    run_id = create_run(project, validated)
    threading.Timer(1.0, lambda: request_stop(project, run_id)).start()
    summary = Runner(project, run_id).execute()
    assert summary.status == "finished"
    assert MicrographSet(project, 1).is_closed and MicrographSet(project, 1).count() == 1


def test_truncated_micrograph_is_recorded_and_the_rest_imported(tmp_path):
    from cryoweave.workflow._submit import run_protocol

    write_mrc(tmp_path / "good.mrc", np.zeros((16, 16)), 1.0)
    write_mrc(tmp_path / "bad.mrc", np.zeros((16, 16)), 1.0)
    (tmp_path / "bad.mrc").write_bytes((tmp_path / "bad.mrc").read_bytes()[:-50])
    project, summary = run_protocol(tmp_path / "p", registry().get("ImportMicrographs"),
                                    {"pattern": str(tmp_path / "*.mrc"), "pixel_size_a": 1.0})
    assert summary.status == "finished"
    assert MicrographSet(project, 1).count() == 1
    with project.reader() as s:
        events = s.query(Event).filter_by(kind="item_failed").all()
    assert len(events) == 1 and "bad.mrc: truncated" in events[0].message


def test_unexportable_names_and_impossible_header_pixel_sizes_are_failed_items(tmp_path):
    from cryoweave.workflow._submit import run_protocol

    write_mrc(tmp_path / "good.mrc", np.zeros((16, 16)), 1.0)
    write_mrc(tmp_path / "two\nlines.mrc", np.zeros((16, 16)), 1.0)
    write_mrc(tmp_path / "huge.mrc", np.zeros((16, 16)), 1e30)
    project, _summary = run_protocol(tmp_path / "p", registry().get("ImportMicrographs"),
                                     {"pattern": str(tmp_path / "*.mrc")})
    assert MicrographSet(project, 1).count() == 1
    with project.reader() as s:
        messages = sorted(e.message for e in s.query(Event).filter_by(kind="item_failed"))
    assert len(messages) == 2
    assert "huge.mrc: the header's pixel size 1e+30 Å is out of range" in messages[0]
    assert "two\\nlines.mrc" in messages[1] and "control character" in messages[1]
    assert "\n" not in messages[1]
