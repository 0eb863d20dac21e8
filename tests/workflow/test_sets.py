"""The typed set API, as one contract suite run on SQLite and (when available) PostgreSQL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoweave.store import MicrographSet, ParticleSet, Project, RecordSet
from cryoweave.store.writers import create_set, derive_set


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def project(request: pytest.FixtureRequest, tmp_path):
    if request.param == "sqlite":
        p = Project.create(tmp_path / "p")
    else:
        p = Project.create(tmp_path / "p", request.getfixturevalue("postgres_database"))
    yield p
    p.close()


def new_set(project, cls=ParticleSet, props=None):
    with project.transaction() as s:
        return cls(project, create_set(s, None, "out", cls, props))


def particles_frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({
        "image_path": [f"/data/stack_{i // 100}.mrcs" for i in range(n)],
        "image_index": np.arange(n) % 100,
        "defocus_u_a": rng.uniform(1e4, 3e4, n),
        "half": rng.integers(1, 3, n),
        "rlnClassNumber": np.ones(n, dtype=int),
        "rlnMyLabel": [f"x{i}" for i in range(n)],
    })


def test_append_iterate_count_and_pass_through(project):
    rng = np.random.default_rng(1)
    ps = new_set(project, props={"pixel_size_a": 1.5})
    frame = particles_frame(250, rng)
    version = ps.append(frame)
    assert version == 1 and ps.version == 1 and ps.count() == 250
    batches = list(ps.iter_batches(100))
    assert [len(b) for b in batches] == [100, 100, 50]
    back = pd.concat(batches, ignore_index=True)
    assert back["item_id"].tolist() == list(range(1, 251))
    np.testing.assert_array_equal(back["defocus_u_a"], frame["defocus_u_a"])
    assert back["rlnMyLabel"].tolist() == frame["rlnMyLabel"].tolist()
    assert back["rlnClassNumber"].tolist() == [1] * 250
    assert back["image_index"].dtype == np.int64
    assert ps.properties == {"pixel_size_a": 1.5}


def test_filter_order_and_subset_keep_ids(project):
    rng = np.random.default_rng(2)
    ps = new_set(project)
    frame = particles_frame(300, rng)
    ps.append(frame)
    P = ParticleSet.fields
    query = ps.query().filter(P.defocus_u_a > 2e4, half=1)
    expected = frame[(frame.defocus_u_a > 2e4) & (frame.half == 1)]
    assert query.count() == len(expected)
    ordered = query.order_by(P.defocus_u_a.desc()).frame()
    assert ordered["defocus_u_a"].is_monotonic_decreasing
    assert sorted(ordered["item_id"]) == sorted(expected.index + 1)
    with project.transaction() as s:
        sub_id = derive_set(s, ps, None, "sub", P.half == 2)
    sub = ParticleSet(project, sub_id)
    assert sub.is_closed
    np.testing.assert_array_equal(sub.item_ids(), np.flatnonzero(frame.half == 2) + 1)
    sub_frame = sub.to_frame().set_index("item_id")
    assert sub_frame.loc[5, "rlnMyLabel"] == "x4" if frame.half[4] == 2 else True
    with project.transaction() as s:
        picked = ParticleSet(project, derive_set(s, ps, None, "picked", item_ids=[3, 7, 11]))
    assert picked.item_ids().tolist() == [3, 7, 11]


def test_versions_state_and_seq_windows(project):
    rs = new_set(project, RecordSet)
    assert rs.state == "open" and rs.version == 0
    rs.append(pd.DataFrame({"item_id": [1, 2], "data": [{"a": 1}, {"a": 2}]}))
    rs.append(pd.DataFrame({"item_id": [5], "data": [{"a": 5}]}))
    assert rs.version == 2
    assert rs.query().published_between(1, 2).item_ids().tolist() == [5]
    assert rs.query().published_between(0, 1).item_ids().tolist() == [1, 2]
    rs.close()
    assert rs.is_closed and rs.version == 3


def test_auto_item_ids_continue(project):
    ms = new_set(project, MicrographSet)
    ms.append(pd.DataFrame({"path": ["a.mrc", "b.mrc"]}))
    ms.append(pd.DataFrame({"path": ["c.mrc"]}))
    assert ms.item_ids().tolist() == [1, 2, 3]


def test_optics_groups_round_trip(project):
    ps = new_set(project)
    optics = pd.DataFrame({"group_id": [1, 2], "name": ["g1", "g2"], "pixel_size_a": [1.2, 1.3],
                           "box_px": [128, 128], "voltage_kv": [300.0, 300.0],
                           "cs_mm": [2.7, 2.7], "amplitude_contrast": [0.1, 0.1],
                           "rlnBeamTiltX": [0.1, -0.2]})
    ps.set_optics(optics)
    back = ps.optics()
    pd.testing.assert_frame_equal(back[optics.columns], optics, check_dtype=False)


def test_derive_changes_typed_and_pass_through_columns(project):
    from cryoweave.store.writers import derive_items

    rng = np.random.default_rng(3)
    source = new_set(project)
    source.append(particles_frame(10, rng))
    with project.transaction() as s:
        target = ParticleSet(project, create_set(s, None, "refined", ParticleSet))
        updates = pd.DataFrame({"item_id": [2, 5, 7], "rot_deg": [10.0, 20.0, 30.0],
                                "rlnMaxValueProbDistribution": [0.1, 0.2, 0.3]})
        derive_items(s, source, target, updates)
    out = target.to_frame().set_index("item_id")
    assert out.index.tolist() == [2, 5, 7]
    assert out["rot_deg"].tolist() == [10.0, 20.0, 30.0]
    assert out["rlnMaxValueProbDistribution"].tolist() == [0.1, 0.2, 0.3]
    assert out.loc[5, "rlnMyLabel"] == "x4"  # the source's own pass-through survives
