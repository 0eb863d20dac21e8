"""benchmarks/gpu.py, the GPU goals script a lent GPU machine runs once per session, kept
working here: every workload runs on NumPy at toy sizes, and only a section measured on a GPU
can go into docs/benchmarks.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_script():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu

        yield gpu
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_every_workload_runs_and_the_cpu_section_says_it_is_no_gpu_figure(gpu_script):
    section = gpu_script.run("cpu", gpu_script.QUICK, None, repeats=1)
    assert len(section.rows) == len(gpu_script.ENGINE) + len(gpu_script.COMMANDS)
    failed = [row for row in section.rows if row[2] in ("failed", "") or "stopped" in row[2]]
    assert not failed, failed
    text = section.markdown()
    assert "CPU (NumPy): not a GPU figure" in text and "not GPU figures" in text
    # the per-step split of the refinement rows comes from the run log
    assert "align" in section.rows[-1][4] and "finalize" in section.rows[-1][4]


def test_a_spent_budget_lists_the_remaining_workloads_as_not_run(gpu_script):
    rows = []
    section = gpu_script.run("cpu", gpu_script.QUICK, ["reconstruction", "simulate"], 1,
                             budget_s=0.0, on_row=lambda s: rows.append(len(s.rows)))
    assert [row[2] for row in section.rows] == ["not run", "not run"]
    assert "**not measured**" in section.markdown()
    assert rows == []  # rows not run are not worth a rewrite of the partial file


def test_install_puts_a_gpu_section_in_place_and_refuses_a_cpu_one(gpu_script, tmp_path,
                                                                   monkeypatch):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n<!-- benchmark:startup -->\nstartup text\n\n"
                    f"{gpu_script.MARK}\nold gpu text\n\n<!-- benchmark:other -->\nother\n")
    monkeypatch.setattr(gpu_script, "DOCS", docs)
    cpu = tmp_path / "cpu.md"
    cpu.write_text(f"{gpu_script.MARK}\n_measured_\n\n## GPU: CPU (NumPy): not a GPU figure\n")
    with pytest.raises(SystemExit, match="not a GPU section"):
        gpu_script.install(cpu)
    measured = tmp_path / "gpu.md"
    measured.write_text(f"{gpu_script.MARK}\n_measured_\n\n## GPU: NVIDIA H200, 140 GiB\n\n"
                        "| workload |\n|---|\n| projection |\n")
    gpu_script.install(measured)
    text = docs.read_text()
    assert "old gpu text" not in text and "## GPU: NVIDIA H200" in text
    assert text.index("startup text") < text.index("NVIDIA H200") < text.index("other")
