"""post_script runs a command from a params or workflow file: refused unless the site
(CRYOWEAVE_ALLOW_POST_SCRIPT=1) or the project (cryoweave.yaml) enables it."""

from __future__ import annotations

import json

import pytest

from cryoweave.errors import CryoweaveError, ParamError
from cryoweave.plugin import StepContext, registry
from cryoweave.protocols.highres._outputs import run_post_script
from cryoweave.workflow import validate_run
from refinement_data import simulated

ENV = "CRYOWEAVE_ALLOW_POST_SCRIPT"


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    project_dir = tmp_path_factory.mktemp("post_script") / "p"
    project, summary, _ = simulated(project_dir, n=20, box=24)
    yield project, {"run": summary.run_id, "output": "particles"}
    project.close()


def validate(project, particles, command="touch x"):
    return validate_run(project, registry().get("ReconstructHighRes"),
                        {"particles": particles, "post_script": command})


def test_post_script_is_refused_at_validation_unless_enabled(simulation, monkeypatch):
    project, particles = simulation
    policy = project.root / "cryoweave.yaml"
    monkeypatch.delenv(ENV, raising=False)
    try:
        with pytest.raises(ParamError, match=f"post_script: running a command from the "
                           f"parameters is disabled; enable it with {ENV}=1"):
            validate(project, particles)
        policy.write_text("allow_post_script: false\n")
        with pytest.raises(ParamError, match=r"cryoweave\.yaml"):
            validate(project, particles)
        policy.write_text("allow_post_script: true\n")
        assert validate(project, particles).params.post_script == "touch x"
        policy.write_text("allow_post_script: yes please\n")
        with pytest.raises(ParamError, match=r"allow_post_script: Input should be a valid "
                                             r"boolean.*cryoweave\.yaml"):
            validate(project, particles)
        policy.unlink()
        monkeypatch.setenv(ENV, "1")
        assert validate(project, particles).params.post_script == "touch x"
        monkeypatch.setenv(ENV, "0")
        with pytest.raises(ParamError, match="post_script"):
            validate(project, particles)
    finally:
        policy.unlink(missing_ok=True)
    assert validate_run(project, registry().get("ReconstructHighRes"),
                        {"particles": particles}).params.post_script is None


def test_cli_refuses_post_script_from_params_and_workflow_files(simulation, run_cli, tmp_path):
    project, particles = simulation
    outside = tmp_path / "outside"
    runs_before = len(project.list_runs())
    params = {"particles": particles, "post_script": f"touch {outside}"}
    (tmp_path / "params.json").write_text(json.dumps(params))
    result = run_cli("run-protocol", "ReconstructHighRes", "params.json", "--project",
                     str(project.root), **{ENV: ""})
    assert result.returncode == 2, result.stderr
    assert "post_script: running a command from the parameters is disabled" in result.stderr
    assert "Traceback" not in result.stderr
    workflow = {"protocols": [{"label": "refine", "protocol": "ReconstructHighRes",
                               "params": params}]}
    (tmp_path / "wf.json").write_text(json.dumps(workflow))
    result = run_cli("workflow", "run", "wf.json", "--project", str(project.root), **{ENV: ""})
    assert result.returncode == 2, result.stderr
    assert "refine: post_script: running a command" in result.stderr
    assert not outside.exists()
    assert len(project.list_runs()) == runs_before


def test_the_step_checks_the_policy_again(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    run_dir = tmp_path / "Runs" / "000001_ReconstructHighRes"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "extra").mkdir()
    ctx = StepContext(1, "final", run_dir)
    touched = tmp_path / "touched"
    with pytest.raises(CryoweaveError, match="is not run: commands from the parameters are "
                                             "disabled"):
        run_post_script(f"touch {touched}", "map.mrc", ctx)
    assert not touched.exists()
    (tmp_path / "cryoweave.yaml").write_text("allow_post_script: true\n")
    run_post_script(f"touch {touched}", "map.mrc", ctx)
    assert touched.exists()
