"""Workflows: validated as a whole, created in order, started together."""

from __future__ import annotations

import json

import pytest

from cryoweave.errors import ParamError
from cryoweave.plugin import registry
from cryoweave.workflow import WorkflowEntry, load_workflow, prepare_workflow, run_protocol


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_every_problem_of_every_entry_is_listed_and_nothing_created(tmp_path):
    entries = [
        WorkflowEntry("steps", "ToySteps", {"n_steps": 0}),
        WorkflowEntry("nope", "NoSuchProtocol", {}),
        WorkflowEntry("consume", "ToyConsumer",
                      {"records": {"run": "steps", "output": "wrong"}}),
        WorkflowEntry("count", "ToyCountParticles",
                      {"particles": {"run": "steps", "output": "records"}}),
    ]
    with pytest.raises(ParamError) as info:
        prepare_workflow(tmp_path / "proj", entries)
    text = "\n".join(info.value.problems)
    assert "steps: parameter 'n_steps'" in text
    assert "nope: unknown protocol 'NoSuchProtocol'" in text
    assert "consume: input 'records': run 'steps' of this workflow has no output 'wrong'" in text
    assert "count: input 'particles' expects a particles set" in text
    assert not (tmp_path / "proj").exists()


def test_file_structure_problems(tmp_path):
    bad = write(tmp_path / "w.json", {"protocols": [{"label": "a", "protocol": "ToySteps"},
                                                    {"label": "a", "protocol": "ToySteps"},
                                                    {"protocol": "ToySteps"}]})
    with pytest.raises(ParamError, match="2 problems") as info:
        load_workflow(bad)
    assert info.value.problems == ["entry 3: needs a string 'label' and 'protocol'",
                                   "label 'a' is used twice"]
    (tmp_path / "w.yaml").write_text("protocols:\n  - label: s\n    protocol: ToySteps\n")
    assert load_workflow(tmp_path / "w.yaml")[0].label == "s"


@pytest.mark.parametrize("label", ["a\x1b[2Jb", "two\nlines", "bell\x07", "rtl\u202eexe",
                                   "x" * 201, "12"])
def test_labels_with_control_characters_are_refused(tmp_path, label):
    bad = write(tmp_path / "w.json", {"protocols": [{"label": label, "protocol": "ToySteps"}]})
    with pytest.raises(ParamError) as info:
        load_workflow(bad)
    expected = "at most 200" if len(label) > 200 else "only digits" if label.isdigit() \
        else "contains control or invisible characters"
    assert expected in str(info.value) and repr(label)[:30] in str(info.value)
    with pytest.raises(ParamError, match=expected):  # the API refuses it too
        run_protocol(tmp_path / "proj", registry().get("ToySteps"), {"n_steps": 1},
                     label=label)
    assert not (tmp_path / "proj").exists()


def test_workflow_runs_producer_and_consumer_together_and_continues(run_cli, tmp_path):
    write(tmp_path / "wf.json", {"protocols": [
        {"label": "producer", "protocol": "ToyProducer",
         "params": {"n_items": 80, "interval_s": 0.02}},
        {"label": "consumer", "protocol": "ToyConsumer",
         "params": {"records": {"run": "producer", "output": "records"}}}]})
    result = run_cli("workflow", "run", "wf.json", "--project", "proj", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == {"producer": "finished", "consumer": "finished"}
    again = run_cli("workflow", "run", "wf.json", "--project", "proj")
    assert again.returncode == 2 and "already used by run 1" in again.stderr
    resumed = run_cli("workflow", "run", "wf.json", "--project", "proj", "--continue", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["runs"] == {"producer": 1, "consumer": 2}
