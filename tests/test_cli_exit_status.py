"""Exit status of runs with failed items, and params/workflow files read strictly (real
subprocesses, real files)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryoweave.errors import InputError
from cryoweave.formats import write_mrc
from cryoweave.workflow import load_workflow, parse_yaml


def micrographs(folder, good, bad, **params):
    folder.mkdir()
    for i in range(good + bad):
        path = folder / f"m{i}.mrc"
        write_mrc(path, np.zeros((16, 16)), 1.0)
        if i >= good:  # truncated: an item failure, the run goes on
            path.write_bytes(path.read_bytes()[:-50])
    (folder.parent / "params.json").write_text(json.dumps(
        {"pattern": str(folder / "*.mrc"), "pixel_size_a": 1.0, **params}))


def test_a_run_where_every_item_failed_is_failed_with_a_non_zero_exit(run_cli, tmp_path):
    # streaming: the files are only judged once the stream closes (they may still be written)
    micrographs(tmp_path / "mics", good=0, bad=2, streaming=True, timeout_s=1.0,
                file_settle_s=0.0)
    result = run_cli("run-protocol", "ImportMicrographs", "params.json", "--project", "proj",
                     "--json", "--quiet")
    assert result.returncode == 3, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "failed" and summary["failed_items"] == 2
    assert summary["error"].startswith("all 2 input items failed, no output item was "
                                       "produced (last: ")
    assert "MRC header describes" in summary["error"]
    text = run_cli("run-protocol", "ImportMicrographs", "params.json", "--project", "proj",
                   "--quiet")
    assert text.returncode == 3 and "run 2 failed" in text.stderr
    assert "all 2 input items failed" in text.stderr and "Traceback" not in text.stderr
    shown = run_cli("show", "1", "--project", "proj", COLUMNS="300")
    assert "ImportMicrographs: failed" in shown.stdout and "failed items: 2" in shown.stdout


def test_an_import_of_only_unreadable_files_is_refused_before_a_run_exists(run_cli, tmp_path):
    micrographs(tmp_path / "mics", good=0, bad=2)
    result = run_cli("run-protocol", "ImportMicrographs", "params.json", "--project", "proj",
                     "--quiet")
    assert result.returncode == 2 and "none of the 2 matching files" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "proj" / "Runs").exists() or \
        not any((tmp_path / "proj" / "Runs").iterdir())


def test_a_run_with_some_failed_items_says_so_in_json_and_show(run_cli, tmp_path):
    micrographs(tmp_path / "mics", good=2, bad=1)
    result = run_cli("run-protocol", "ImportMicrographs", "params.json", "--project", "proj",
                     "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "finished" and summary["failed_items"] == 1
    assert summary["outputs"]["micrographs"]["size"] == 2
    shown = run_cli("show", "1", "--project", "proj", COLUMNS="300")
    assert "failed items: 1" in shown.stdout and "item_failed (item 3)" in shown.stdout
    again = run_cli("run-protocol", "--continue", "1", "--project", "proj", "--quiet")
    assert again.returncode == 0
    assert "1 input items failed; `cryoweave show 1` lists them" in again.stderr


def test_a_non_utf8_params_file_is_refused_naming_the_file(run_cli, tmp_path):
    (tmp_path / "params.json").write_bytes(b'{"pattern": "caf\xe9/*.mrc",\n "pixel_size_a": 1}')
    result = run_cli("run-protocol", "ImportMicrographs", "params.json", "--project", "proj")
    assert result.returncode == 2
    assert "params.json: the params file is not UTF-8 text (byte 0xe9 at line 1); save it " \
           "as UTF-8" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "proj").exists()


def test_duplicate_keys_in_a_params_file_are_refused(run_cli, tmp_path):
    (tmp_path / "params.json").write_text(
        '{"pattern": "*.mrc", "pixel_size_a": 1.0, "pixel_size_a": 4.0}')
    result = run_cli("run-protocol", "ImportMicrographs", "params.json", "--project", "proj")
    assert result.returncode == 2
    assert "params.json: key 'pixel_size_a' is given twice in one object; keep one" \
        in result.stderr
    assert not (tmp_path / "proj").exists()


def test_a_deeply_nested_params_file_is_refused(run_cli, tmp_path):
    (tmp_path / "params.json").write_text("[" * 100_000 + "]" * 100_000)
    result = run_cli("run-protocol", "ImportMicrographs", "params.json", "--project", "proj")
    assert result.returncode == 2
    assert "params.json: nested too deeply to be a params file" in result.stderr
    assert "internal error" not in result.stderr and not (tmp_path / "proj").exists()
    (tmp_path / "w.yaml").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match=r"w\.yaml: nested too deeply to be a workflow file"):
        load_workflow(tmp_path / "w.yaml")


@pytest.mark.parametrize(("name", "text", "message"), [
    ("w.json", '{"protocols": [{"label": "a", "protocol": "ToySteps", "label": "b"}]}',
     "w.json: key 'label' is given twice in one object"),
    ("w.json", '{"protocols": [{"label": "a", "protocol": "ToySteps", '
               '"params": {"n_steps": 1, "n_steps": 2}}]}',
     "w.json: key 'n_steps' is given twice in one object"),
    ("w.yaml", "protocols:\n  - label: a\n    protocol: ToySteps\n    params:\n"
               "      n_steps: 1\n      n_steps: 2\n",
     "w.yaml: key 'n_steps' is given twice in one mapping (line 6)"),
    ("w.yaml", "protocols: []\nprotocols:\n  - label: a\n",
     "w.yaml: key 'protocols' is given twice in one mapping (line 2)"),
])
def test_duplicate_keys_in_a_workflow_file_are_refused(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_workflow(tmp_path / name)


def test_workflow_yaml_merge_keys_are_not_duplicates_and_non_utf8_is_refused(tmp_path):
    text = ("defaults: &d {n_steps: 1, items_per_step: 2}\n"
            "protocols:\n  - label: a\n    protocol: ToySteps\n    params:\n"
            "      <<: *d\n      n_steps: 3\n")
    data = parse_yaml(tmp_path / "w.yaml", text)
    assert data["protocols"][0]["params"] == {"n_steps": 3, "items_per_step": 2}
    (tmp_path / "w.yaml").write_bytes(b"protocols:\n  - label: \xff\n")
    with pytest.raises(InputError, match=r"w.yaml: the workflow file is not UTF-8 text "
                                         r"\(byte 0xff at line 2\)"):
        load_workflow(tmp_path / "w.yaml")
