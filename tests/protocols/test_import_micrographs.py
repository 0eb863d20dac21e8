"""ImportMicrographs, once and streaming from a folder that fills during acquisition."""

from __future__ import annotations

import threading
import time

import numpy as np

from cryoweave.formats import write_mrc
from cryoweave.plugin import registry
from cryoweave.store import MicrographSet, Project
from cryoweave.store.schema import Event
from cryoweave.workflow import Runner, create_run, stop, validate_run


def test_import_once_reads_headers(tmp_path):
    from cryoweave.workflow import run_protocol

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
    threading.Timer(1.0, lambda: stop(project, run_id)).start()
    summary = Runner(project, run_id).execute()
    assert summary.status == "finished"
    assert MicrographSet(project, 1).is_closed and MicrographSet(project, 1).count() == 1


def test_truncated_micrograph_is_recorded_and_the_rest_imported(tmp_path):
    from cryoweave.workflow import run_protocol

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
    from cryoweave.workflow import run_protocol

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


# -- symbolic links and files still being written ------------------------------------------------
def mrc_bytes(folder, shape=(64, 64), seed=0):
    """The bytes of a complete MRC micrograph (written outside any watched folder)."""
    image = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    path = write_mrc(folder / f"source_{seed}.mrc", image, 1.0)
    data = path.read_bytes()
    path.unlink()
    return data, image


def failed_messages(project) -> list[str]:
    with project.reader() as s:
        return sorted(e.message for e in s.query(Event).filter_by(kind="item_failed"))


def streaming_run(project, folder, **params):
    validated = validate_run(project, registry().get("ImportMicrographs"),
                             {"pattern": str(folder / "*.mrc"), "streaming": True,
                              "pixel_size_a": 1.0, **params})
    return create_run(project, validated)


def test_streaming_import_takes_one_item_per_real_file_and_refuses_bad_links(tmp_path):
    folder, outside = tmp_path / "movies", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    write_mrc(folder / "a.mrc", np.zeros((16, 16)), 1.0)
    (folder / "alias.mrc").symlink_to("a.mrc")  # two names of one file
    (folder / "loop.mrc").symlink_to("loop.mrc")
    write_mrc(outside / "x.mrc", np.zeros((16, 16)), 1.0)
    (folder / "ext.mrc").symlink_to(outside / "x.mrc")
    (folder / "dangling.mrc").symlink_to("nowhere.mrc")  # waits for its target until closing
    project = Project.create(tmp_path / "p")
    run_id = streaming_run(project, folder, timeout_s=1.0, file_settle_s=0.1)
    summary = Runner(project, run_id).execute()
    assert summary.status == "finished", summary.error
    frame = MicrographSet(project, 1).to_frame()
    assert frame["path"].tolist() == [str((folder / "a.mrc").resolve())]
    dangling, ext, loop = failed_messages(project)
    assert "dangling.mrc: broken symbolic link" in dangling
    assert "ext.mrc: symbolic link to" in ext and "follow_external_links" in ext
    assert "loop.mrc: symbolic link loop" in loop


def test_continued_streaming_import_skips_new_names_of_imported_files(tmp_path):
    import json
    import os
    import signal
    import subprocess

    from conftest import cryoweave_command, subprocess_env

    folder = tmp_path / "movies"
    folder.mkdir()
    write_mrc(folder / "a.mrc", np.zeros((16, 16)), 1.0)
    (tmp_path / "params.json").write_text(json.dumps(
        {"pattern": str(folder / "*.mrc"), "streaming": True, "pixel_size_a": 1.0,
         "timeout_s": 300, "file_settle_s": 0.1}))

    def start(*args):
        return subprocess.Popen(cryoweave_command("run-protocol", *args, "--project", "proj",
                                                  "--quiet"),
                                cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def wait_for_micrographs(n, process):
        deadline = time.monotonic() + 60  # bounds only the failure case
        last_error = None
        while time.monotonic() < deadline and process.poll() is None:
            try:  # the project may still be being created by the process
                with Project.open(tmp_path / "proj") as project:
                    if project.find_run(1) is not None and MicrographSet(project, 1).count() >= n:
                        return
            except Exception as exc:  # reported if the wait fails
                last_error = exc
            time.sleep(0.1)
        raise AssertionError(f"{n} micrograph(s) were not imported ({last_error!r}): "
                             f"{process.communicate()}")

    first = start("ImportMicrographs", "params.json")
    wait_for_micrographs(1, first)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    write_mrc(folder / "b.mrc", np.ones((16, 16)), 1.0)
    (folder / "alias_a.mrc").symlink_to("a.mrc")  # a new name of an imported file
    (folder / "alias_b.mrc").symlink_to("b.mrc")  # two names of one new file
    continued = start("--continue", "1")
    try:
        wait_for_micrographs(2, continued)
        with Project.open(tmp_path / "proj") as project:
            stop(project, 1)
        _, err = continued.communicate(timeout=60)
    finally:
        continued.kill()
    assert continued.returncode == 0, err
    with Project.open(tmp_path / "proj") as project:
        frame = MicrographSet(project, 1).to_frame()
        assert failed_messages(project) == []
    assert frame["item_id"].tolist() == [1, 2]
    assert frame["path"].tolist() == [str((folder / n).resolve()) for n in ("a.mrc", "b.mrc")]


def test_streaming_import_waits_for_a_writer_that_pauses_longer_than_the_settle_time(tmp_path):
    from cryoweave.formats import read_image

    folder = tmp_path / "movies"
    folder.mkdir()
    data, image = mrc_bytes(tmp_path)
    project = Project.create(tmp_path / "p")
    run_id = streaming_run(project, folder, timeout_s=300, file_settle_s=0.2)
    written = threading.Event()

    def write_pausing_then_stop():
        with open(folder / "mic.mrc", "wb") as handle:
            handle.write(data[:1024 + 4000])  # the header and part of the data
            handle.flush()
            time.sleep(1.5)  # far longer than file_settle_s
            handle.write(data[1024 + 4000:])
        written.set()
        deadline = time.monotonic() + 60  # bounds only the failure case
        while time.monotonic() < deadline:
            if MicrographSet(project, 1).count() or failed_messages(project):
                break
            time.sleep(0.1)
        stop(project, run_id)

    writer = threading.Thread(target=write_pausing_then_stop)
    writer.start()
    summary = Runner(project, run_id).execute()
    writer.join()
    assert written.is_set()
    assert summary.status == "finished", summary.error
    assert failed_messages(project) == []
    frame = MicrographSet(project, 1).to_frame()
    assert frame["name"].tolist() == ["mic"]
    np.testing.assert_array_equal(read_image(frame["path"].iloc[0])[0], image)


def test_a_file_still_incomplete_when_the_stream_closes_is_a_failed_item(tmp_path):
    folder = tmp_path / "movies"
    folder.mkdir()
    data, _ = mrc_bytes(tmp_path)
    (folder / "mic.mrc").write_bytes(data[:1024 + 4000])  # its writer never finishes
    project = Project.create(tmp_path / "p")
    run_id = streaming_run(project, folder, timeout_s=1.0, file_settle_s=0.1)
    Runner(project, run_id).execute()
    assert MicrographSet(project, 1).count() == 0
    [message] = failed_messages(project)
    assert "mic.mrc" in message and "when the streaming import closed" in message
    assert f"it had {1024 + 4000} of the {len(data)} bytes its MRC header describes" in message


def test_symlink_loop_is_one_failed_item_and_the_rest_is_imported(tmp_path):
    from cryoweave.workflow import run_protocol

    for name in ("a", "b"):
        write_mrc(tmp_path / f"{name}.mrc", np.zeros((16, 16)), 1.3)
    (tmp_path / "0loop.mrc").symlink_to("0loop.mrc")  # sorted first
    (tmp_path / "c1.mrc").symlink_to("c2.mrc")
    (tmp_path / "c2.mrc").symlink_to("c1.mrc")
    (tmp_path / "same_as_a.mrc").symlink_to("a.mrc")
    (tmp_path / "dangling.mrc").symlink_to("nowhere.mrc")
    project, summary = run_protocol(tmp_path / "p", registry().get("ImportMicrographs"),
                                    {"pattern": str(tmp_path / "*.mrc")})
    assert summary.status == "finished", summary.error
    frame = MicrographSet(project, summary.outputs["micrographs"]).to_frame()
    assert frame["name"].tolist() == ["a", "b"]
    assert frame["pixel_size_a"].tolist() == [1.3, 1.3]
    loops = [m for m in failed_messages(project) if "symbolic link loop" in m]
    assert [m.split(":")[0] for m in loops] == [str(tmp_path / n) for n in
                                                ("0loop.mrc", "c1.mrc", "c2.mrc")]
    [broken] = [m for m in failed_messages(project) if m not in loops]
    assert broken.startswith(f"{tmp_path / 'dangling.mrc'}: broken symbolic link")


def test_links_out_of_the_folder_are_refused_unless_allowed(tmp_path):
    from cryoweave.workflow import run_protocol

    folder, outside = tmp_path / "mics", tmp_path / "raw"
    folder.mkdir()
    outside.mkdir()
    write_mrc(folder / "in.mrc", np.zeros((16, 16)), 1.0)
    write_mrc(outside / "x.mrc", np.zeros((16, 16)), 1.0)
    (folder / "out.mrc").symlink_to(outside / "x.mrc")
    params = {"pattern": str(folder / "*.mrc")}
    project, summary = run_protocol(tmp_path / "p1", registry().get("ImportMicrographs"), params)
    frame = MicrographSet(project, summary.outputs["micrographs"]).to_frame()
    assert frame["name"].tolist() == ["in"]
    [message] = failed_messages(project)
    assert message.startswith(f"{folder / 'out.mrc'}: symbolic link to "
                              f"{(outside / 'x.mrc').resolve()}")
    assert "set follow_external_links to true" in message

    project, summary = run_protocol(tmp_path / "p2", registry().get("ImportMicrographs"),
                                    {**params, "follow_external_links": True})
    frame = MicrographSet(project, summary.outputs["micrographs"]).to_frame()
    assert frame["path"].tolist() == [str((folder / "in.mrc").resolve()),
                                      str((outside / "x.mrc").resolve())]
    assert failed_messages(project) == []
