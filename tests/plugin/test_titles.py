"""Parameter titles: declared where the name makes a poor one, derived in one place otherwise."""

from cryoweave.plugin import ProtocolParams, field_title, param, registry


class _Params(ProtocolParams):
    box_px: int = param(64, unit="px", description="Box")
    log_a: float = param(1.0, description="a in y = a − b·ln(x + c)")
    do_lowpass: bool = param(False, description="Low-pass")
    weight_ssnr: bool = param(True, description="SSNR weights")
    cs_mm: float = param(2.7, unit="mm", description="Cs", title="Spherical aberration (Cs)")


def test_titles_drop_units_and_do_prefix_and_keep_acronyms():
    properties = _Params.model_json_schema()["properties"]
    titles = {name: prop["title"] for name, prop in properties.items()}
    assert titles == {
        "box_px": "Box",
        "log_a": "Log a",  # no unit declared: the suffix is part of the name
        "do_lowpass": "Lowpass",
        "weight_ssnr": "Weight SSNR",
        "cs_mm": "Spherical aberration (Cs)",
    }
    assert field_title("max_resolution_a") == "Max resolution a"  # no field info: no unit known


def test_built_in_titles_have_no_unit_suffix_or_bare_abbreviation():
    poor = []
    for cls in registry().protocols():
        for name, prop in cls.Params.model_json_schema()["properties"].items():
            title = prop["title"]
            words = title.lower().split()
            derived = cls.Params.model_fields[name].title is None
            if (derived and words[-1] in {"px", "a", "a2", "kv", "mm", "deg", "percent"}) \
                    or title in {"Box", "Cs", "N particles", "Log", "Datadir"}:
                poor.append(f"{cls.__name__}.{name}: {title!r}")
    assert poor == []
