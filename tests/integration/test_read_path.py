"""The read path through the Flask API on the real node and Redis: events, filters, cold start, explain,
fusion, similar items, validation and the recommendation cache."""
from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.integration

# id, title, description, category, tags, price, in_stock, popularity. The id prefix is the theme.
CATALOG = [
    ("space-1", "Voyage to the Andromeda Galaxy",
     "A science fiction novel about a starship crew exploring distant galaxies.",
     "books", ["space", "scifi"], 14.0, True, 30),
    ("space-2", "Mars Colony Chronicles",
     "Astronauts build the first human colony on the red planet Mars.",
     "books", ["space", "scifi"], 18.0, True, 20),
    ("space-3", "Beginner Astronomy Telescope",
     "A refracting telescope for viewing planets, the moon and star clusters.",
     "gear", ["space", "astronomy"], 149.0, True, 40),
    ("space-4", "Star Atlas of the Night Sky",
     "Maps of constellations, nebulae and galaxies for stargazers.",
     "books", ["space", "astronomy"], 25.0, False, 10),
    ("space-5", "Rocket Science Documentary",
     "The history of space rockets, from the Apollo moon landing to reusable boosters.",
     "media", ["space", "history"], 12.0, True, 15),
    ("space-6", "Alien Invasion Film Box Set",
     "Science fiction movies about spaceships and extraterrestrial invaders.",
     "media", ["space", "scifi"], 35.0, True, 25),
    ("cook-1", "Italian Pasta Cookbook",
     "Recipes for fresh pasta, tomato sauces and lasagne from Italian kitchens.",
     "books", ["cooking", "italian"], 22.0, True, 35),
    ("cook-2", "Cast Iron Frying Pan",
     "A heavy skillet for searing steak, frying eggs and baking cornbread.",
     "gear", ["cooking", "kitchen"], 45.0, True, 50),
    ("cook-3", "Baking Bread at Home",
     "Sourdough starters, kneading dough and baking crusty loaves of bread.",
     "books", ["cooking", "baking"], 19.0, True, 18),
    ("cook-4", "Chef Knife Set",
     "Sharp stainless steel kitchen knives for chopping vegetables and slicing meat.",
     "gear", ["cooking", "kitchen"], 89.0, False, 22),
    ("cook-5", "Spicy Curry Recipes",
     "Indian curries, spice blends and rice dishes for home cooks.",
     "books", ["cooking", "indian"], 16.0, True, 12),
    ("cook-6", "Cooking Show Season One",
     "A television cooking competition where chefs prepare dinner dishes.",
     "media", ["cooking", "tv"], 20.0, True, 8),
    ("garden-1", "Vegetable Gardening Guide",
     "How to grow tomatoes, carrots and lettuce in raised garden beds.",
     "books", ["gardening", "vegetables"], 21.0, True, 28),
    ("garden-2", "Stainless Steel Garden Trowel",
     "A hand trowel for digging soil, planting bulbs and transplanting seedlings.",
     "gear", ["gardening", "tools"], 15.0, True, 33),
    ("garden-3", "Rose Pruning Shears",
     "Sharp secateurs for pruning roses, shrubs and flowering plants.",
     "gear", ["gardening", "tools"], 29.0, False, 9),
    ("garden-4", "Organic Compost Handbook",
     "Turn kitchen scraps and leaves into rich compost for garden soil.",
     "books", ["gardening", "organic"], 13.0, True, 11),
    ("garden-5", "Flower Seeds Collection",
     "Seeds of sunflowers, tulips and wildflowers to plant in spring.",
     "gear", ["gardening", "flowers"], 9.0, True, 45),
    ("garden-6", "Gardening Through the Seasons",
     "A documentary about planting, weeding and harvesting a garden all year.",
     "media", ["gardening", "tv"], 17.0, True, 7),
    ("foot-1", "Leather Football",
     "A match ball for soccer training and league games on grass pitches.",
     "gear", ["football", "training"], 30.0, True, 60),
    ("foot-2", "Goalkeeper Gloves",
     "Padded gloves that help a goalkeeper catch and punch the ball.",
     "gear", ["football", "goalkeeping"], 40.0, True, 14),
    ("foot-3", "History of the World Cup",
     "The story of football's greatest tournament, its teams and legendary goals.",
     "books", ["football", "history"], 24.0, True, 19),
    ("foot-4", "Football Boots with Studs",
     "Lightweight soccer cleats for grip on wet grass fields.",
     "gear", ["football", "shoes"], 75.0, False, 27),
    ("foot-5", "Tactics of Modern Soccer",
     "Formations, pressing and passing strategies used by top football coaches.",
     "books", ["football", "coaching"], 27.0, True, 6),
    ("foot-6", "Season Highlights DVD",
     "The best goals, saves and matches of the football league season.",
     "media", ["football", "tv"], 11.0, True, 16),
    # The fusion trio for q=lantern: the novel has the word in its title (BM25 wins by far) but is not
    # about lamps; the camping light says "lantern" once and is the nearest vector; the head torch has
    # no "lantern" at all but is semantically close, so it pushes the novel to vector rank 3.
    ("lantern-novel", "Murder at the Lantern Inn",
     "A detective mystery novel set in Victorian London.",
     "books", ["mystery"], 12.0, True, 5),
    ("camp-light", "Camping Light",
     "A battery powered lantern that lights up your tent at night on camping trips.",
     "gear", ["camping"], 25.0, True, 5),
    ("head-torch", "LED Head Torch",
     "A bright flashlight worn on the head for night hikes and caving.",
     "gear", ["camping"], 19.0, True, 5),
]
BY_ID = {row[0]: row for row in CATALOG}
ALL_IDS = set(BY_ID)


def theme(item_id: str) -> str:
    return item_id.split("-")[0]


@pytest.fixture()
def catalog(fresh, es, settings):
    from indexer.catalog import index_items
    from indexer.documents import Item
    from indexer.encoder import get_encoder
    from indexer.lifecycle import alias_name

    items = [Item(id=i, title=t, description=d, category=c, tags=tags, price=p, in_stock=s, popularity=pop, version=1)
             for i, t, d, c, tags, p, s, pop in CATALOG]
    result = index_items(es, settings, items, get_encoder(settings))
    assert result.indexed == len(items) and not result.failed
    es.indices.refresh(index=alias_name(settings, "items"))


def get(client, url: str, **params) -> dict:
    response = client.get(url, query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def recs(client, user: str, **params) -> dict:
    return get(client, f"/v1/users/{user}/recommendations", **params)


def ids(body: dict) -> list[str]:
    return [item["id"] for item in body["items"]]


def send(client, *events: tuple[str, str, str]) -> dict:
    response = client.post("/v1/events", json={"events": [{"user_id": u, "item_id": i, "type": t}
                                                           for u, i, t in events]})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_an_event_changes_the_very_next_recommendations(client, catalog):
    before = recs(client, "ann", k=5)
    assert before["cold_start"] is True and before["profile_version"] == 0

    assert send(client, ("ann", "space-3", "like"))["profile_versions"] == {"ann": 1}
    after_like = recs(client, "ann", k=5)
    assert after_like["profile_version"] == 1 and after_like["cold_start"] is False
    assert after_like["cached"] is False
    assert ids(after_like) != ids(before)
    assert sum(theme(i) == "space" for i in ids(after_like)) >= 4, ids(after_like)
    assert ids(after_like)[0] == "space-4"  # the star atlas is the telescope's nearest neighbour

    send(client, ("ann", "foot-1", "purchase"))
    after_purchase = recs(client, "ann", k=5)
    assert after_purchase["profile_version"] == 2
    assert sum(theme(i) == "foot" for i in ids(after_purchase)) >= 2, ids(after_purchase)
    assert sum(theme(i) == "foot" for i in ids(after_like)) == 0


def test_disliked_and_seen_items_disappear(client, catalog):
    send(client, ("bob", "space-1", "like"), ("bob", "space-2", "view"), ("bob", "space-6", "dislike"))
    body = recs(client, "bob", k=50)
    assert set(ids(body)) == ALL_IDS - {"space-1", "space-2", "space-6"}

    # Seen items are filtered, not merely outranked: switching the filter off brings them back.
    shown = ids(recs(client, "bob", k=50, exclude_seen="false"))
    assert {"space-1", "space-2", "space-6"} <= set(shown)
    # And the dislike pushed the profile away from the film box set, which a like-only user ranks second.
    send(client, ("cat", "space-1", "like"))
    liked_only = ids(recs(client, "cat", k=50, exclude_seen="false"))
    assert liked_only.index("space-6") <= 2
    assert shown.index("space-6") > liked_only.index("space-6") + 5

    explicit = ids(recs(client, "cat", k=50, exclude="space-4,space-5"))
    assert not {"space-1", "space-4", "space-5"} & set(explicit)


FILTER_CASES = {
    "gear-in-stock-under-50": ({"category": "gear", "in_stock": "true", "price_max": "50"},
                               lambda r: r[3] == "gear" and r[6] and r[5] <= 50),
    "two-tags-price-band": ({"tags": "football,gardening", "price_min": "10", "price_max": "30"},
                            lambda r: bool({"football", "gardening"} & set(r[4])) and 10 <= r[5] <= 30),
    "two-categories-out-of-stock": ({"category": ["books", "media"], "in_stock": "false"},
                                    lambda r: r[3] in ("books", "media") and not r[6]),
}


@pytest.mark.parametrize("case", list(FILTER_CASES))
def test_filters_hold_for_every_hit(client, catalog, case):
    params, allowed = FILTER_CASES[case]
    matching = {i for i, row in BY_ID.items() if allowed(row)}
    # A space fan, so that unfiltered kNN would fill a short page with space items: the page can only be
    # full of matching items if the filter runs inside the kNN search, not after it.
    send(client, ("dan", "space-3", "like"))
    answers = {
        "recommendations": (recs(client, "dan", k=4, **params), matching - {"space-3"}),
        "search": (get(client, "/v1/search", q="garden", k=4, **params), matching),
        "similar": (get(client, "/v1/items/space-1/similar", k=4, **params), matching - {"space-1"}),
    }
    for endpoint, (body, expected) in answers.items():
        got = ids(body)
        assert set(got) <= expected, (endpoint, got)
        assert len(got) == min(4, len(expected)), (endpoint, got, expected)
        for item in body["items"]:
            row = BY_ID[item["id"]]
            assert (item["category"], item["price"], item["in_stock"]) == (row[3], row[5], row[6])


def test_cold_start_is_trending_then_personal_from_the_first_event(client, catalog):
    # Before any event, trending is empty and the catalog's popularity order stands in.
    early = recs(client, "early-bird", k=3, explain="true")
    assert early["cold_start"] is True and early["strategy"] == "trending"
    assert ids(early) == ["foot-1", "cook-2", "garden-5"]
    assert {item["explain"]["source"] for item in early["items"]} == {"popularity"}

    send(client, *[(f"u{n}", "garden-6", "purchase") for n in range(3)], ("u9", "garden-4", "click"))
    fresh_user = recs(client, "newcomer", k=5, explain="true")
    assert fresh_user["cold_start"] is True and fresh_user["profile_version"] == 0
    assert ids(fresh_user)[:2] == ["garden-6", "garden-4"]  # the two least popular items, now trending
    assert [i["explain"]["source"] for i in fresh_user["items"]][:3] == ["trending", "trending", "popularity"]

    send(client, ("newcomer", "foot-5", "like"))
    personal = recs(client, "newcomer", k=5)
    assert personal["cold_start"] is False and personal["profile_version"] == 1
    assert personal["strategy"] == "rrf"
    assert "foot-5" not in ids(personal)
    assert sum(theme(i) == "foot" for i in ids(personal)) >= 4, ids(personal)


@pytest.mark.parametrize("fusion", ["rrf", "linear"])
def test_explain_adds_up(client, catalog, fusion):
    # space-2 was liked, then disliked: it must no longer be offered as a reason.
    send(client, ("eve", "space-1", "like"), ("eve", "space-2", "like"), ("eve", "cook-1", "purchase"),
         ("eve", "space-2", "dislike"))
    body = get(client, "/v1/search", q="garden", user_id="eve", fusion=fusion, explain="true", k=10)
    assert {"space", "cook", "garden"} <= {theme(i) for i in ids(body)}, ids(body)
    assert body["retrievers"] == ["bm25", "query_knn", "user_knn"]
    items = body["items"]
    assert len(items) == 10
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    by_source: dict[str, list[tuple[int, float]]] = {}
    for item in items:
        explain = item["explain"]
        assert explain["fused_score"] == item["score"]
        assert math.isclose(sum(s["contribution"] for s in explain["sources"].values()), item["score"],
                            rel_tol=1e-9, abs_tol=1e-12)
        for name, source in explain["sources"].items():
            by_source.setdefault(name, []).append((source["rank"], source["score"]))
            if fusion == "rrf":
                assert math.isclose(source["contribution"], 1 / (60 + source["rank"]))
            else:
                assert 0.0 <= source["normalized"] <= 1.0
                assert math.isclose(source["contribution"], source["normalized"])
        if "bm25" in explain["sources"]:
            row = BY_ID[item["id"]]
            assert "garden" in f"{row[1]} {row[2]} {' '.join(row[4])}".lower()
        because = explain["because"]["item_id"]
        assert because in {"space-1", "cook-1"}
        if theme(item["id"]) in ("space", "cook"):
            assert because == {"space": "space-1", "cook": "cook-1"}[theme(item["id"])], item["id"]
    assert set(by_source) == {"bm25", "query_knn", "user_knn"}
    for name, entries in by_source.items():
        ranks = [rank for rank, _ in entries]
        assert len(set(ranks)) == len(ranks) and min(ranks) >= 1, name
        by_rank = [score for _, score in sorted(entries)]
        assert by_rank == sorted(by_rank, reverse=True), name  # a better rank never has a lower score


def test_rrf_and_linear_fusion_give_documented_distinct_rankings(client, catalog):
    """RRF only sees ranks: the camping light (BM25 #2, vector #1) beats the novel (BM25 #1, vector #3).
    Linear min-max fusion sees the novel's BM25 score dwarf the light's and puts the novel first."""
    rrf = get(client, "/v1/search", q="lantern", fusion="rrf", explain="true", k=6)
    linear = get(client, "/v1/search", q="lantern", fusion="linear", explain="true", k=6)
    sources = {i["id"]: {n: (s["rank"], s["score"]) for n, s in i["explain"]["sources"].items()}
               for i in rrf["items"]}
    assert sources["lantern-novel"]["bm25"][0] == 1 and sources["camp-light"]["bm25"][0] == 2
    assert sources["camp-light"]["query_knn"][0] == 1 and sources["lantern-novel"]["query_knn"][0] == 3
    assert sources["lantern-novel"]["bm25"][1] > 2 * sources["camp-light"]["bm25"][1]

    assert ids(rrf)[:3] == ["camp-light", "lantern-novel", "head-torch"]
    assert ids(linear)[:3] == ["lantern-novel", "camp-light", "head-torch"]
    assert math.isclose(rrf["items"][0]["score"], 1 / 62 + 1 / 61)
    # Min-max: BM25 found only two items, so the light's BM25 share is 0 and its vector share is 1.
    assert math.isclose(linear["items"][1]["score"], 1.0)
    assert 1.0 < linear["items"][0]["score"] < 2.0
    # Both strategies fuse the same retrieval: identical per-source ranks and scores.
    assert {i["id"]: {n: (s["rank"], s["score"]) for n, s in i["explain"]["sources"].items()}
            for i in linear["items"]} == sources
    assert rrf["strategy"] == "rrf" and linear["strategy"] == "linear"


def test_similar_items_exclude_the_item_itself(client, catalog):
    body = get(client, "/v1/items/space-3/similar", k=50)
    assert set(ids(body)) == ALL_IDS - {"space-3"}
    assert all(theme(i) == "space" for i in ids(body)[:3]), ids(body)
    missing = client.get("/v1/items/no-such-item/similar")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"


INVALID = [
    ("get", "/v1/users/u1/recommendations?k=0", None, "k:"),
    ("get", "/v1/users/u1/recommendations?k=1000", None, "k:"),
    ("get", "/v1/users/u1/recommendations?colour=red", None, "colour"),
    ("get", "/v1/users/u1/recommendations?price_min=50&price_max=10", None,
     "price_min (50.0) is greater than price_max"),
    ("get", "/v1/users/u1/recommendations?fusion=foo", None, "fusion"),
    ("get", "/v1/users/u1/recommendations?in_stock=maybe", None, "in_stock"),
    ("get", "/v1/users/u1/recommendations?price_max=inf", None, "price_max: Input should be a finite number"),
    ("get", "/v1/search?q=%20%20", None, "q (the search text) is required"),
    ("get", "/v1/search", None, "q (the search text) is required"),
    ("get", "/v1/items/space-1/similar?q=rockets", None, "similar items take neither q nor user_id"),
    ("post", "/v1/events", {"user_id": "u1",
     "item_id": "space-1",
     "type": "teleport"}, "unknown event type 'teleport'"),
    ("post", "/v1/events", {"user_id": "u1", "type": "like"}, "item_id"),
    ("post", "/v1/events", {"user_id": "u1", "item_id": "space-1", "type": "like", "ts": "2100-01-01T00:00:00Z"},
     "is in the future"),
    ("post", "/v1/events", b'{"user_id": "u1", "item_id": ', "must be JSON"),
]


@pytest.mark.parametrize("method, url, body, message", INVALID, ids=[f"{m}:{u}" for m, u, _, _ in INVALID])
def test_invalid_parameters_get_a_400_problem(client, catalog, method, url, body, message):
    if method == "get":
        response = client.get(url)
    elif isinstance(body, bytes):
        response = client.post(url, data=body, content_type="application/json")
    else:
        response = client.post(url, json=body)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == 400 and message in problem["detail"], problem
    assert "Traceback" not in response.get_data(as_text=True)
    assert 'File "' not in response.get_data(as_text=True)


def test_recommendations_are_cached_until_the_next_event(client, catalog):
    send(client, ("fay", "cook-3", "like"))
    first = recs(client, "fay", k=5)
    second = recs(client, "fay", k=5)
    assert (first["cached"], second["cached"]) == (False, True)
    assert ids(second) == ids(first) and second["profile_version"] == first["profile_version"] == 1
    assert recs(client, "fay", k=6)["cached"] is False  # other parameters, other entry

    send(client, ("fay", "garden-1", "cart"))
    after = recs(client, "fay", k=5)
    assert after["cached"] is False and after["profile_version"] == 2
    assert "garden-1" not in ids(after) and ids(after) != ids(first)
    assert recs(client, "fay", k=5)["cached"] is True


def test_mmr_diversifies_the_list_and_paging_does_not_repeat(client, catalog):
    send(client, ("dee", "space-1", "like"), ("dee", "space-3", "like"))
    plain = recs(client, "dee", k=6)
    diverse = recs(client, "dee", k=6, mmr_lambda=0.1)
    assert len({theme(i) for i in ids(diverse)}) > len({theme(i) for i in ids(plain)}), (ids(plain), ids(diverse))
    assert ids(diverse)[0] == ids(plain)[0]  # the most relevant item still leads
    page_two = recs(client, "dee", k=6, page=2)
    assert len(ids(page_two)) == 6 and not set(ids(page_two)) & set(ids(plain))
