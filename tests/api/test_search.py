"""Message search, GET /v1/search (issue 14 item 1): visibility as history's, phrases,
prefixes, both orders, keyset pagination, filters, bad queries, the statement timeout and
the per-user rate (docs/CONTRACT.md, openapi/openapi.yaml).

Every test searches for words made up for it (`word()`), so the shared database's other
messages never match."""
import random
import string
import subprocess
import threading

from chatlib import (add_members, delete_message_raw, edit_raw, make_direct, make_group,
                     new_users, remove_member, send)
from natterlib import (Client, assert_problem, assert_status, need_env, psql, psql_int,
                       wait_for)

SEARCH = "/v1/search"


def word(prefix="zq") -> str:
    """A made-up lowercase word no other test sends."""
    return prefix + "".join(random.choices(string.ascii_lowercase, k=10))


def search_raw(client, tok, q, timeout=None, **params):
    if q is not None:
        params["q"] = q
    if timeout:
        return client.get(SEARCH, params=params, token=tok, timeout=timeout)
    return client.get(SEARCH, params=params, token=tok)


def search(client, tok, q, **params) -> dict:
    r = search_raw(client, tok, q, **params)
    assert_status(r, 200)
    return r.json()


def hits(client, tok, q, **params) -> list[tuple[int, int]]:
    """(chat_id, seq) of every result of the first page."""
    return [(h["chat_id"], h["seq"]) for h in search(client, tok, q, **params)["results"]]


def snippet_text(result) -> str:
    return "".join(p["text"] for p in result["snippet"])


def matched(result) -> list[str]:
    return [p["text"] for p in result["snippet"] if p["match"]]


# --------------------------------------------------------------------------- finding

def test_search_finds_words_phrases_and_prefixes(client):
    """A word finds the message, case-insensitively, with a snippet whose matched parts are
    the word; a quoted phrase finds only the words in that order; `stem*` finds words
    starting with it; words are and-ed, `or` alternates and `-word` excludes."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_direct(client, ta, b["id"])["id"]
    w1, w2, w3 = word(), word(), word()
    m1 = send(client, ta, cid, f"The {w1.upper()} {w2} jumps over the lazy dog")
    m2 = send(client, tb, cid, f"{w2} then {w1}, but the other way round")
    m3 = send(client, tb, cid, f"only {w3}ing here")

    page = search(client, tb, w1)
    assert page["order"] == "newest" and page["next_cursor"] is None
    assert [(h["chat_id"], h["seq"]) for h in page["results"]] == [(cid, m2["seq"]), (cid, m1["seq"])]
    first = page["results"][1]
    assert first["sender_id"] == a["id"] and first["created_at"] == m1["created_at"]
    assert first["edited_at"] is None and first["rank"] > 0
    assert matched(first) == [w1.upper()]
    assert w2 in snippet_text(first) and "lazy" in snippet_text(first)

    assert hits(client, tb, f'"{w1} {w2}"') == [(cid, m1["seq"])]
    assert hits(client, tb, f'"{w2} {w1}"') == []
    assert hits(client, ta, f"{w3}*") == [(cid, m3["seq"])]
    assert matched(search(client, ta, f"{w3}*")["results"][0]) == [f"{w3}ing"]
    assert hits(client, ta, w3) == []  # whole words only: no stemming
    assert hits(client, ta, f"{w1} {w3}*") == []
    assert hits(client, ta, f"{w1} -{w2}") == []
    assert hits(client, ta, f"{w1} or {w3}*") == []  # prefix terms are and-ed with the rest
    assert set(hits(client, ta, f"{w3}ing or {w1}")) == {(cid, m1["seq"]), (cid, m2["seq"]), (cid, m3["seq"])}
    # punctuation between words only separates them
    assert hits(client, ta, f"{w1}&|!(){w2}:") == [(cid, m2["seq"]), (cid, m1["seq"])]


def test_search_matches_any_language(client):
    """The `simple` configuration matches words whole in any script and drops no word as a
    stop word: "die" (a German article, an English verb) and a Cyrillic word are found."""
    (a, ta), (b, _) = new_users(client, 2)
    cid = make_direct(client, ta, b["id"])["id"]
    w = word()
    m1 = send(client, ta, cid, f"die Katze {w} schläft")
    m2 = send(client, ta, cid, f"привет {w} мир")
    assert hits(client, ta, f"die {w}") == [(cid, m1["seq"])]
    assert hits(client, ta, f"ПРИВЕТ {w}") == [(cid, m2["seq"])]
    assert hits(client, ta, f'"{w} schläft"') == [(cid, m1["seq"])]


# --------------------------------------------------------------------------- visibility

def test_search_visibility_follows_history(client):
    """Exactly what history shows: a non-member finds nothing (and gets 404 naming the
    chat), a late joiner only what was sent after joining, a removed member nothing, and
    nobody a deleted message; an edited message matches its new text only."""
    (a, ta), (b, tb), (c, tc), (d, td) = new_users(client, 4)
    cid = make_group(client, ta, "search", [b["id"]])["id"]
    w, old, new = word(), word(), word()
    before = send(client, ta, cid, f"{w} before d joined")
    deleted = send(client, tb, cid, f"{w} soon deleted")
    edited = send(client, tb, cid, f"{w} {old}")
    add_members(client, ta, cid, [d["id"]])
    after = send(client, ta, cid, f"{w} after d joined")
    assert_status(delete_message_raw(client, tb, cid, deleted["seq"]), 204)
    assert_status(edit_raw(client, tb, cid, edited["seq"], f"{w} {new}"), 200)

    assert set(hits(client, ta, w)) == {(cid, s["seq"]) for s in (before, edited, after)}
    assert hits(client, tc, w) == []
    assert_problem(search_raw(client, tc, w, chat_id=cid), 404, "chat_not_found")
    assert hits(client, td, w) == [(cid, after["seq"])]
    assert hits(client, td, w, chat_id=cid) == [(cid, after["seq"])]
    assert hits(client, ta, old) == []
    assert hits(client, ta, new) == [(cid, edited["seq"])]
    res = search(client, ta, new)["results"][0]
    assert res["edited_at"] is not None and matched(res) == [new]

    remove_member(client, ta, cid, b["id"])
    assert hits(client, tb, w) == []
    assert_problem(search_raw(client, tb, w, chat_id=cid), 404, "chat_not_found")
    # system messages ("... added ...") are never results
    assert all(s != 1 for _, s in hits(client, ta, w))


# --------------------------------------------------------------------------- order, pages

def test_search_orders_by_relevance_or_newest(client):
    """order=relevance puts the message where the words are densest first (ties newest
    first); the default order is newest first."""
    (a, ta), (b, _) = new_users(client, 2)
    cid = make_direct(client, ta, b["id"])["id"]
    w, x = word(), word()
    dense = send(client, ta, cid, f"{w} {x} {w} {x} {w}")
    sparse = send(client, ta, cid, f"{w} " + " ".join(word("filler") for _ in range(30)))
    middle = send(client, ta, cid, f"{w} {x} and a few other words")
    assert hits(client, ta, w) == [(cid, middle["seq"]), (cid, sparse["seq"]), (cid, dense["seq"])]
    page = search(client, ta, f"{w} or {x}", order="relevance")
    assert page["order"] == "relevance"
    ranked = [(h["chat_id"], h["seq"]) for h in page["results"]]
    assert ranked == [(cid, dense["seq"]), (cid, middle["seq"]), (cid, sparse["seq"])], page
    ranks = [h["rank"] for h in page["results"]]
    assert ranks == sorted(ranks, reverse=True) and ranks[-1] > 0


def collect(client, tok, q, order, limit, between=None, max_pages=20, **params):
    """Every result of a search, page by page; between(page_no) runs after each page."""
    out, cursor = [], None
    for n in range(max_pages):
        p = dict(params, order=order, limit=limit)
        if cursor:
            p["cursor"] = cursor
        page = search(client, tok, q, **p)
        assert page["order"] == order and len(page["results"]) <= limit
        out += page["results"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        if between:
            between(n)
    raise AssertionError(f"more than {max_pages} pages")


def test_search_pages_have_no_gaps_or_repeats_while_messages_arrive(client):
    """Both orders, across two chats: following next_cursor yields every message that
    matched when the search started exactly once, in the order's sequence, although new
    matching messages arrive between the pages. Newest first, they sort before the cursor
    and never show up; by relevance, one may show up on a later page if it ranks lower."""
    (a, ta), (b, tb) = new_users(client, 2)
    c1 = make_direct(client, ta, b["id"])["id"]
    c2 = make_group(client, tb, "pages", [a["id"]])["id"]
    w = word()
    sent = []
    for i in range(13):
        cid, tok = (c1, ta) if i % 2 else (c2, tb)
        # repeats of w give the relevance order distinct ranks and ties both
        sent.append(send(client, tok, cid, " ".join([w] * (1 + i % 3)) + f" number {i}"))
    want = {(m["chat_id"], m["seq"]) for m in sent}
    for order in ("newest", "relevance"):
        extra = []

        def arrive(n, order=order, extra=extra):
            extra.append(send(client, ta, c1, f"{w} arrived while paging {order} {n}"))

        got = collect(client, tb, w, order, 4, between=arrive)
        keys = [(h["chat_id"], h["seq"]) for h in got]
        arrived = {(m["chat_id"], m["seq"]) for m in extra}
        assert len(extra) >= 3 and len(keys) == len(set(keys)), f"{order}: a result repeated: {keys}"
        assert want <= set(keys), f"{order}: missing {want - set(keys)}"
        assert set(keys) <= want | arrived
        if order == "newest":
            assert not arrived & set(keys)
            stamps = [h["created_at"] for h in got]
            assert stamps == sorted(stamps, reverse=True)
        else:
            ranks = [h["rank"] for h in got]
            assert ranks == sorted(ranks, reverse=True)
        want |= arrived  # matched when the next order's search starts


def test_search_filters_by_chat_and_sender(client):
    """chat_id narrows to one chat, sender_id to one sender, together to both."""
    (a, ta), (b, tb), (c, tc) = new_users(client, 3)
    g = make_group(client, ta, "f", [b["id"], c["id"]])["id"]
    d = make_direct(client, ta, b["id"])["id"]
    w = word()
    ga = send(client, ta, g, w)
    gb = send(client, tb, g, w)
    da = send(client, ta, d, w)
    db_ = send(client, tb, d, w)
    assert set(hits(client, ta, w)) == {(g, ga["seq"]), (g, gb["seq"]), (d, da["seq"]), (d, db_["seq"])}
    assert set(hits(client, ta, w, chat_id=g)) == {(g, ga["seq"]), (g, gb["seq"])}
    assert set(hits(client, ta, w, sender_id=b["id"])) == {(g, gb["seq"]), (d, db_["seq"])}
    assert hits(client, ta, w, chat_id=d, sender_id=a["id"]) == [(d, da["seq"])]
    assert hits(client, tc, w, sender_id=a["id"]) == [(g, ga["seq"])]
    assert hits(client, ta, w, sender_id=c["id"]) == []


# --------------------------------------------------------------------------- bad input

def test_search_bad_queries_get_clear_errors(client):
    """Missing, empty, blank, too long, control characters and an unclosed quote get 400
    invalid_query with a reason; no searchable word (only punctuation or operators) or only
    exclusions get 422 query_without_terms; 200 characters are fine; a query string that is
    not UTF-8 gets 400 invalid_parameter. Never a 500."""
    (a, ta), (b, tb) = new_users(client, 2)
    make_direct(client, ta, b["id"])
    cases = [
        (None, 400, "invalid_query", "empty"),
        ("", 400, "invalid_query", "empty"),
        ("    ", 400, "invalid_query", "empty"),
        ("x" * 201, 400, "invalid_query", "too_long"),
        ("é" * 201, 400, "invalid_query", "too_long"),
        ("hello\nworld", 400, "invalid_query", "control_character"),
        ("hello\tworld", 400, "invalid_query", "control_character"),
        ('"hello world', 400, "invalid_query", "unbalanced_quotes"),
        ('a "b" "c', 400, "invalid_query", "unbalanced_quotes"),
        ("&|!():*", 422, "query_without_terms", "no_terms"),
        ("* - ' \\ <-> :*", 422, "query_without_terms", "no_terms"),
        ('""', 422, "query_without_terms", "no_terms"),
        ("-hello", 422, "query_without_terms", "exclusions_only"),
        ("-hello -world", 422, "query_without_terms", "exclusions_only"),
    ]
    for q, status, code, reason in cases:
        body = assert_problem(search_raw(client, ta, q), status, code, "q")
        assert body["reason"] == reason, (q, body)
    # (another user: the searches above spent most of a's rate-limit burst)
    for q in ("x" * 200, "é" * 200, "it's a 'quote' \\ back:slash", "foo:* & bar | !baz", "a<->b"):
        assert_status(search_raw(client, tb, q), 200)
    r = client.get(SEARCH + "?q=%ff%fe", token=tb)
    assert_problem(r, 400, "invalid_parameter")


def test_search_bad_parameters(client):
    """limit out of 1..50, an unknown order, a malformed chat_id or sender_id, and a cursor
    that is garbage or from the other order get 400 invalid_parameter naming the field."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_direct(client, ta, b["id"])["id"]
    w = word()
    for _ in range(3):
        send(client, ta, cid, w)
    for params, field in [({"limit": 0}, "limit"), ({"limit": 51}, "limit"), ({"limit": "x"}, "limit"),
                          ({"order": "oldest"}, "order"), ({"chat_id": "x"}, "chat_id"),
                          ({"chat_id": 0}, "chat_id"), ({"sender_id": -1}, "sender_id"),
                          ({"cursor": "!!"}, "cursor"), ({"cursor": "bjox"}, "cursor")]:
        assert_problem(search_raw(client, ta, w, **params), 400, "invalid_parameter", field)
    newest = search(client, ta, w, limit=1)["next_cursor"]
    relevant = search(client, ta, w, limit=1, order="relevance")["next_cursor"]
    assert newest and relevant
    assert_problem(search_raw(client, ta, w, cursor=newest, order="relevance"), 400,
                   "invalid_parameter", "cursor")
    assert_problem(search_raw(client, ta, w, cursor=relevant), 400, "invalid_parameter", "cursor")
    assert_problem(search_raw(client, ta, w, chat_id=10**15), 404, "chat_not_found")
    assert_problem(client.get(SEARCH, params={"q": w}), 401, "unauthorized")


# --------------------------------------------------------------------------- bounds

def test_search_timeout_answers_503(start_api, spec):
    """A search that runs past NATTER_SEARCH_TIMEOUT_MS in PostgreSQL is cancelled and
    answered 503 search_timeout with Retry-After; the server goes on serving (its
    connection went back to the pool clean), and GET /v1/limits reports the timeout."""
    srv = start_api(NATTER_SEARCH_TIMEOUT_MS="1", NATTER_DB_POOL_SIZE="2")
    client = Client(srv.base_url, spec)
    (a, ta), (b, _) = new_users(client, 2)
    cid = make_direct(client, ta, b["id"])["id"]
    w = word()
    rows = 40000
    # a chat with many matching messages, written directly (a test's own chat)
    psql("INSERT INTO messages (chat_id, seq, sender_id, kind, body)"
         " SELECT $1::bigint, s, $2::bigint, 'text', $3 || ' filler words number ' || s"
         " FROM generate_series(1, $4::int) s",
         cid, a["id"], w, rows, timeout=300)
    psql("UPDATE chats SET last_seq = $2::bigint WHERE id = $1::bigint", cid, rows)
    try:
        for order in ("relevance", "newest"):
            r = search_raw(client, ta, w, order=order)
            body = assert_problem(r, 503, "search_timeout")
            assert int(r.headers["Retry-After"]) >= 1, body
        for _ in range(3):  # more requests than pool connections: none was left broken
            assert_status(client.get("/v1/users/me", token=ta), 200)
        limits = client.get("/v1/limits").json()
        assert limits["search"]["timeout_ms"] == 1
    finally:
        psql("DELETE FROM messages WHERE chat_id = $1::bigint", cid)
    srv.stop()
    srv.assert_clean_exit()


def test_search_concurrency_is_bounded(start_api, spec):
    """Searches run on a pool of their own, never on an HTTP thread: with one HTTP thread
    and NATTER_SEARCH_MAX_CONCURRENT=1, while a search is held (a psql session locks
    messages) other requests are still answered, one more search waits for the search
    thread, and the next gets 503 service_unavailable with Retry-After at once; after the
    lock goes, the held and the waiting search answer 200."""
    srv = start_api(NATTER_SEARCH_MAX_CONCURRENT="1", NATTER_HTTP_THREADS="1",
                    NATTER_SEARCH_TIMEOUT_MS="60000")
    client = Client(srv.base_url, spec)
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_direct(client, ta, b["id"])["id"]
    w = word()
    m = send(client, ta, cid, w)
    locker = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                               need_env("NATTER_TEST_DATABASE_URL")],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    answers, threads = {}, []

    def search_in_thread(name, tok):
        def run():
            try:
                answers[name] = search_raw(Client(srv.base_url, spec), tok, w, timeout=120)
            except BaseException as e:  # shown by the assertions below
                answers[name] = e
        t = threading.Thread(target=run)
        t.start()
        threads.append(t)

    try:
        locker.stdin.write("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE;\n")
        locker.stdin.flush()
        wait_for(lambda: psql_int("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                                  " WHERE c.relname = 'messages' AND l.mode = 'AccessExclusiveLock'"
                                  " AND l.granted") == 1, 60, "the lock on messages")
        search_in_thread("held", ta)
        wait_for(lambda: psql_int("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                  " AND query LIKE '%ts_headline%'") >= 1, 60, "the first search to wait")
        assert_status(client.get("/v1/users/me", token=tb), 200)  # the HTTP thread is free
        search_in_thread("second", tb)
        search_in_thread("third", tb)
        wait_for(lambda: len(answers) >= 1, 60, "one of the two later searches to be answered")
        refused = [n for n in ("second", "third") if n in answers]
        assert len(refused) == 1 and "held" not in answers, answers
        r = answers[refused[0]]
        assert_problem(r, 503, "service_unavailable")
        assert int(r.headers["Retry-After"]) >= 1
    finally:
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(timeout=60)
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    waited = "third" if refused[0] == "second" else "second"
    for name in ("held", waited):
        assert_status(answers[name], 200)
        assert [(h["chat_id"], h["seq"]) for h in answers[name].json()["results"]] == [(cid, m["seq"])]
    srv.stop()
    srv.assert_clean_exit()


def test_search_is_rate_limited_per_user(start_api, spec):
    """Past NATTER_RATE_SEARCH_BURST searches a user gets 429 rate_limited (limit
    `search`, Retry-After) while another user still searches; GET /v1/limits lists the
    rate and the search bounds."""
    srv = start_api(NATTER_RATE_SEARCH_BURST="3", NATTER_RATE_SEARCH_PER_MIN="1")
    client = Client(srv.base_url, spec)
    (a, ta), (b, tb) = new_users(client, 2)
    w = word()
    for _ in range(3):
        assert_status(search_raw(client, ta, w), 200)
    r = search_raw(client, ta, w)
    body = assert_problem(r, 429, "rate_limited")
    assert body["limit"] == "search" and int(r.headers["Retry-After"]) >= 1
    assert_status(search_raw(client, tb, w), 200)
    limits = client.get("/v1/limits").json()
    assert limits["rates"]["search"] == {"burst": 3, "per_minute": 1, "scope": "user"}
    assert limits["search"]["max_query_chars"] == 200
    assert limits["pages"]["search"] == {"default": 20, "max": 50}
    srv.stop()
    srv.assert_clean_exit()


def test_search_index_is_used(client):
    """The migration's index (messages_search_idx) is on chat_id and the very expression
    and predicate the query uses, so PostgreSQL can look up "this chat and these words"
    in it; and it serves the words alone (the plan of the same WHERE, other ways off)."""
    indexdef = psql("SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_search_idx'")
    assert indexdef.endswith(" USING gin (chat_id, to_tsvector('simple'::regconfig, body))"
                             " WHERE ((kind = 'text'::text) AND (deleted_at IS NULL))"), indexdef
    where = (" WHERE to_tsvector('simple'::regconfig, m.body) @@"
             " (websearch_to_tsquery('simple', 'zqx') && to_tsquery('simple', ''))"
             " AND m.kind = 'text' AND m.deleted_at IS NULL")
    plan = psql("SET enable_seqscan = off; SET enable_indexscan = off; "
                "EXPLAIN SELECT 1 FROM messages m" + where)
    assert "messages_search_idx" in plan, plan
