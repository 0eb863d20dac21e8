"""Protocol reference pages come from the same declarations as the forms."""

from __future__ import annotations

from cryoweave.docs import write_reference
from cryoweave.plugin import registry


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
