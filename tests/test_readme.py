"""The README's tour runs as typed, on the demo project (minutes: `make validate`)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from rich.console import Console

from conftest import REPO_ROOT, subprocess_env
from cryoweave.demo import run_demo


def tour_blocks(readme: str) -> list[str]:
    """The ```sh blocks of the "A five-minute tour" section, as bash scripts: the venv
    activation is dropped (a `cryoweave` on PATH stands in) and a line whose comment says
    "exit code N" must exit with N."""
    section = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        lines = []
        for line in block.splitlines():
            if line.startswith("source "):
                continue
            expected = re.search(r"#.*exit code (\d+)", line)
            if expected:
                line = f"{line.split('#')[0].rstrip()} || test $? -eq {expected.group(1)}"
            lines.append(line)
        blocks.append("\n".join(lines))
    return blocks


def test_tour_blocks_are_found_and_link_no_shared_folder():
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = tour_blocks(readme)
    assert len(blocks) >= 6 and "ProcessVolume" in "\n".join(blocks)
    assert "|| test $? -eq 2" in blocks[2]
    assert "../shared" not in readme


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_readme_tour_runs_as_typed(tmp_path):
    with open(tmp_path / "demo.txt", "w") as log:
        run_demo(tmp_path / "demo_project", console=Console(file=log), quick=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "cryoweave"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m cryoweave.cli "$@"\n')
    shim.chmod(0o755)
    env = subprocess_env()
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    for block in tour_blocks((REPO_ROOT / "README.md").read_text()):
        result = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{block}\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "out" / "map.mrc").is_file()
    assert (tmp_path / "out" / "particles.star").is_file()
