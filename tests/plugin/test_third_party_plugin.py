"""A third-party plugin installed with pip is discovered through its entry point and runs."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile

from conftest import cryoweave_command

PLUGIN_CODE = '''
import pandas as pd
from cryoweave.plugin import (Plan, Plugin, Protocol, ProtocolOutputs, ProtocolParams,
                              RecordSet, Step, StepResult, param)


class HelloWorld(Protocol):
    """Say hello a few times."""

    label = "hello world"

    class Params(ProtocolParams):
        times: int = param(2, gt=0, description="how many greetings")

    class Outputs(ProtocolOutputs):
        greetings: RecordSet

    def plan(self, params, ctx):
        return Plan(steps=[Step("hello", greet, {"times": params.times},
                                outputs=["extra/hello.txt"])])


def greet(ctx, times):
    (ctx.extra_dir / "hello.txt").write_text("hello\\n" * times)
    frame = pd.DataFrame({"data": [{"n": i} for i in range(times)]})
    return StepResult(publish={"greetings": frame})


PLUGIN = Plugin("hello", "1.0", (HelloWorld,))
'''


def build_wheel(folder):
    files = {
        "cw_hello/__init__.py": PLUGIN_CODE,
        "cw_hello-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: cw-hello\nVersion: 1.0\n",
        "cw_hello-1.0.dist-info/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\n"
                                         "Root-Is-Purelib: true\nTag: py3-none-any\n"),
        "cw_hello-1.0.dist-info/entry_points.txt": "[cryoweave.plugins]\nhello = cw_hello:PLUGIN\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("cw_hello-1.0.dist-info/RECORD,,")
    files["cw_hello-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / "cw_hello-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def test_pip_installed_plugin_is_listed_and_runnable(tmp_path):
    wheel = build_wheel(tmp_path)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    "--disable-pip-version-check", "--target", str(site), str(wheel)],
                   check=True, timeout=120)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    listed = subprocess.run(cryoweave_command("protocols"), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "HelloWorld" in listed.stdout and "hello" in listed.stdout
    assert "ImportParticles" in listed.stdout  # built-ins come through the same mechanism
    (tmp_path / "params.json").write_text(json.dumps({"times": 3}))
    ran = subprocess.run(cryoweave_command("run-protocol", "HelloWorld", "params.json",
                                           "--project", "proj", "--json", "--quiet"),
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["status"] == "finished"
    assert report["outputs"]["greetings"]["size"] == 3
    greeting = tmp_path / "proj/Runs/000001_HelloWorld/extra/hello.txt"
    assert greeting.read_text().count("hello") == 3
