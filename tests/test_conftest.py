"""`make test` says where the real-data fixtures live when their tests are skipped."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import conftest


class _Reporter:
    def __init__(self, skipped):
        self.stats = {"skipped": skipped}
        self.lines = []

    def write_line(self, line, **markup):
        self.lines.append(line)


def test_real_data_skip_names_the_fixture_folder(tmp_path, monkeypatch):
    missing = tmp_path / "no-fixtures"
    monkeypatch.setenv("CRYOWEAVE_REAL_DATA", str(missing))
    with pytest.raises(pytest.skip.Exception) as info:
        conftest.real_data_dir.__wrapped__()
    assert f"they live in {missing}" in str(info.value)
    assert "CRYOWEAVE_REAL_DATA" in str(info.value)
    reporter = _Reporter([SimpleNamespace(longrepr=("x.py", 3, f"Skipped: {info.value}")),
                          SimpleNamespace(longrepr=("y.py", 4, "Skipped: needs a GPU"))])
    conftest.pytest_terminal_summary(reporter, 0, None)
    assert reporter.lines == [f"1 real_data tests skipped: {info.value}"]
    quiet = _Reporter([])
    conftest.pytest_terminal_summary(quiet, 0, None)
    assert quiet.lines == []
