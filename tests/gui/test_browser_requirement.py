"""A missing Chromium skips the browser tests locally and fails them in CI."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT, subprocess_env


def _run_browser_test(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/gui/test_browser.py", "-k", "hides_and_shows"],
        cwd=REPO_ROOT, env=subprocess_env(CRYOWEAVE_CHROMIUM="/nonexistent/chromium", **env),
        capture_output=True, text=True, timeout=120)


def test_missing_chromium_is_a_skip_locally_and_a_failure_when_required():
    local = _run_browser_test(CRYOWEAVE_REQUIRE_SERVICES="0")
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
    required = _run_browser_test(CRYOWEAVE_REQUIRE_SERVICES="1")
    assert required.returncode == 1 and "required services must be present" in required.stdout, \
        required.stdout
