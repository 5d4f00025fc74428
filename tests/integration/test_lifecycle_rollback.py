"""Reindex and rollback through a real Celery worker: rollback returns to the version that was live before
(the alias history, not version numbers), retention keeps versions by when they were live, and the writes
made meanwhile survive every swap."""
from __future__ import annotations

import pytest

from indexer import lifecycle

pytestmark = pytest.mark.integration


def _items(ids: list[str], version: int = 1, title: str = "Rocket voyage") -> list[dict]:
    return [{"id": i, "title": f"{title} {i}", "description": "Astronauts fly a spacecraft to a red planet.",
             "category": "space", "version": version} for i in ids]


def _name(settings, number: int) -> str:
    return lifecycle.physical_name(settings, "items", number)


def _live_ids(es, settings) -> set[str]:
    alias = lifecycle.alias_name(settings, "items")
    es.indices.refresh(index=alias)
    return {h["_id"] for h in es.search(index=alias, size=1000, source=False)["hits"]["hits"]}


def test_rollback_returns_to_the_version_live_before_and_keeps_every_write(fresh, worker, es, settings):
    from workers.tasks import index_items, reindex, rollback

    index_items.delay(_items([f"base{i}" for i in range(20)])).get(timeout=300)
    assert reindex.delay().get(timeout=300)["target"] == _name(settings, 2)
    assert rollback.delay().get(timeout=300) == {"from": _name(settings, 2), "to": _name(settings, 1),
                                                 "copied": 0, "embedded": 0, "deleted": 0}
    index_items.delay(_items(["after-first-rollback"])).get(timeout=120)
    third = reindex.delay().get(timeout=300)
    assert third["target"] == _name(settings, 3) and third["pruned"] == []  # v2 and v1 are both kept
    # Writes while v3 serves: a new item, an update, a delete. The rollback target (v1) missed them all.
    index_items.delay(_items(["while-v3"]) + _items(["base0"], version=2, title="Tomato soup")).get(timeout=120)
    from workers.tasks import delete_items

    delete_items.delay(["base1"], 10**13).get(timeout=120)

    result = rollback.delay().get(timeout=300)
    assert result["from"] == _name(settings, 3)
    assert result["to"] == _name(settings, 1), result  # not v2, the highest number below v3: a stale copy
    assert result["copied"] >= 2 and result["deleted"] == 1
    assert lifecycle.current_index(es, settings) == _name(settings, 1)
    live = _live_ids(es, settings)
    assert {"after-first-rollback", "while-v3"} <= live and "base1" not in live
    assert len(live) == 21
    alias = lifecycle.alias_name(settings, "items")
    assert es.get(index=alias, id="base0")["_source"]["title"] == "Tomato soup base0"

    # Retention by when versions were live: v1 (left just now for v4) and v3 (left before) stay; v2, live
    # longest ago, goes, though its number is higher than v1's.
    fourth = reindex.delay().get(timeout=300)
    assert fourth["target"] == _name(settings, 4) and fourth["pruned"] == [_name(settings, 2)]
    assert rollback.delay().get(timeout=300)["to"] == _name(settings, 1)
    assert _live_ids(es, settings) == live


def test_rollback_catches_up_in_process_and_refuses_beside_a_build(fresh, es, settings, capsys):
    """The CLI path (no worker): the same catch-up; a version being built by a reindex blocks a rollback."""
    from indexer import catalog
    from indexer.documents import Item
    from indexer.encoder import get_encoder
    from indexer.errors import Conflict
    from indexer.rollback import rollback

    encoder = get_encoder(settings)
    catalog.index_items(es, settings, [Item.model_validate(i) for i in _items(["a", "b"])], encoder)
    catalog.reindex(es, settings, encoder)
    catalog.index_items(es, settings, [Item.model_validate(i) for i in _items(["c"])], encoder)
    lifecycle.set_building(es, settings, lifecycle.create_version(es, settings))
    with pytest.raises(Conflict):
        rollback(es, settings, encoder)
    lifecycle.set_building(es, settings, None)
    done = rollback(es, settings, encoder)
    assert (done["from"], done["to"], done["copied"]) == (_name(settings, 2), _name(settings, 1), 1)
    assert _live_ids(es, settings) == {"a", "b", "c"}
    from workers.cli import main

    assert main(["indices"]) == 0
    listing = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "current" in listing[_name(settings, 1)] and "live until" in listing[_name(settings, 2)]
