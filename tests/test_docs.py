"""Protocol reference pages come from the same declarations as the forms, and the committed
pages (docs/protocols/) are those of today's declarations."""

from __future__ import annotations

import re

import yaml

from conftest import REPO_ROOT
from cryoweave.cli._docs import protocol_page, reference_pages, write_reference
from cryoweave.plugin import registry
from cryoweave.protocols import PLUGIN

DOCS = REPO_ROOT / "docs"


def test_every_protocol_gets_a_page_listing_every_parameter(tmp_path):
    written = write_reference(tmp_path)
    index = (tmp_path / "README.md").read_text()
    for protocol in registry().protocols():
        page = (tmp_path / f"{protocol.__name__}.md").read_text()
        assert protocol.__name__ in index
        for name in protocol.Params.model_fields:
            assert f"`{name}`" in page
        for output in protocol.outputs():
            assert f"`{output}`" in page
    assert len(written) == len(registry().protocols()) + 1


def test_committed_reference_is_up_to_date_for_every_built_in_protocol():
    registry()  # gives the built-ins their plugin identity
    expected = reference_pages(sorted(PLUGIN.protocol_classes(), key=lambda p: p.__name__))
    committed = {p.name for p in (DOCS / "protocols").glob("*.md")}
    assert committed == set(expected), "run `make docs` to (re)generate docs/protocols/"
    for name, text in expected.items():
        assert (DOCS / "protocols" / name).read_text() == text, \
            f"docs/protocols/{name} is out of date with its declaration; run `make docs`"


def test_choice_parameters_do_not_break_table_rows():
    page = protocol_page(registry().get("ReconstructHighRes"))
    rows = [line for line in page.splitlines() if line.startswith("| ")]
    columns = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
    assert columns == {9}  # 8 cells on every row, header included
    assert "| global \\| local \\| automatic \\| stochastic \\| none |" in page


def _nav_files(nav):
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            yield from _nav_files(value)
        else:
            yield value


def test_site_navigation_lists_existing_pages_and_every_protocol():
    """`make docs` builds the site with `mkdocs build --strict` (mkdocs is in the docs extra,
    not the test extra); here: the navigation points at pages that exist."""
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    assert config["theme"]["name"] == "material" and config["docs_dir"] == "docs"
    files = list(_nav_files(config["nav"]))
    missing = [f for f in files if not (DOCS / f).is_file()]
    assert not missing
    for protocol in PLUGIN.protocol_classes():
        assert f"protocols/{protocol.__name__}.md" in files
