"""Read markers, unread counts and mentions, receipts and receipt events
(docs/CONTRACT.md, issue 3: "Unread rules", POST /read, GET /receipts)."""
import pytest

from chatlib import (add_members, assert_unread, chat_ids_of, chat_path, chat_snapshot,
                     delete_message_raw, events, get_chat, inbox_rows, list_chats_all,
                     make_direct, make_group, new_users, read, read_raw, receipts,
                     remove_member, send, set_role)
from natterlib import assert_problem, assert_status


def entry(client, tok, cid):
    found = [c for c in list_chats_all(client, tok, limit=100) if c["id"] == cid]
    assert len(found) == 1
    return found[0]


def read_receipts(user_id, cid):
    """(user_id, seq) of the `read` receipt events in the user's inbox for the chat."""
    return [(p["user_id"], p["seq"]) for p in events(inbox_rows(user_id), "receipt", cid)
            if p["kind"] == "read"]


def test_unread_follows_sends_reads_and_deletes(client):
    """B's unread_count/unread_mentions count A's text messages after B's read marker:
    5 sends (2 mentioning B) give 5/2; reading up to the 3rd gives 2/1 (in the answer, the
    chat and the list); a smaller read changes nothing (200, same marker); A deleting
    unread messages lowers the counts, deleting a read one does not."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_direct(client, ta, b["id"])["id"]
    ms = [send(client, ta, cid, f"m{i}", mentions=[b["id"]] if i in (1, 3) else [])
          for i in range(5)]
    assert_unread(get_chat(client, tb, cid), 5, 2)
    assert_unread(entry(client, tb, cid), 5, 2)

    got = read(client, tb, cid, ms[2]["seq"])
    assert got == {"chat_id": cid, "last_read_seq": ms[2]["seq"], "unread_count": 2,
                   "unread_mentions": 1}
    chat = get_chat(client, tb, cid)
    assert chat["last_read_seq"] == ms[2]["seq"]
    assert_unread(chat, 2, 1)
    assert_unread(entry(client, tb, cid), 2, 1)

    for smaller in (ms[0]["seq"], ms[2]["seq"], 0):
        got = read(client, tb, cid, smaller)
        assert got == {"chat_id": cid, "last_read_seq": ms[2]["seq"], "unread_count": 2,
                       "unread_mentions": 1}
    assert get_chat(client, tb, cid)["last_read_seq"] == ms[2]["seq"]

    assert_status(delete_message_raw(client, ta, cid, ms[4]["seq"]), 204)
    assert_unread(get_chat(client, tb, cid), 1, 1)
    assert_status(delete_message_raw(client, ta, cid, ms[1]["seq"]), 204)     # already read
    assert_unread(get_chat(client, tb, cid), 1, 1)
    assert_status(delete_message_raw(client, ta, cid, ms[3]["seq"]), 204)
    chat = get_chat(client, tb, cid)
    assert_unread(chat, 0, 0)
    # only deleted messages lie after the marker: nothing is unread
    assert chat["has_unread"] is False
    assert_unread(entry(client, tb, cid), 0, 0)


@pytest.mark.parametrize("body", [{"seq": 1000}, {"seq": -1}, {"seq": "2"}, {"seq": 1.5},
                                  {"seq": None}, {}])
def test_read_validation(client, body):
    """A read beyond the chat's last_seq, negative, missing or not an integer is 422
    validation_failed field=seq; the read marker does not move."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    send(client, ta, cid, "one")
    before = chat_snapshot(cid)
    r = client.post(chat_path(cid, "read"), json=body, token=tb)
    assert_problem(r, 422, "validation_failed", field="seq")
    assert chat_snapshot(cid) == before
    assert get_chat(client, tb, cid)["last_read_seq"] == 0


def test_read_exactly_last_seq(client):
    """Reading exactly the chat's last_seq is allowed and clears everything; one past it
    is 422."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_direct(client, ta, b["id"])["id"]
    m = send(client, ta, cid, "x")
    assert_problem(read_raw(client, tb, cid, m["seq"] + 1), 422, "validation_failed",
                   field="seq")
    got = read(client, tb, cid, m["seq"])
    assert (got["last_read_seq"], got["unread_count"], got["unread_mentions"]) == \
        (m["seq"], 0, 0)
    chat = get_chat(client, tb, cid)
    assert_unread(chat, 0, 0)
    assert chat["has_unread"] is False


def test_own_messages_never_unread(client):
    """My own messages never count as unread for me, and sending moves my read (and
    delivered) marker to my message."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    send(client, tb, cid, "b1")
    b2 = send(client, tb, cid, "b2")
    assert_unread(get_chat(client, ta, cid), 2, 0)
    assert get_chat(client, tb, cid)["last_read_seq"] == b2["seq"]
    assert_unread(get_chat(client, tb, cid), 0, 0)

    mine = send(client, ta, cid, "a1", mentions=[a["id"]])
    chat = get_chat(client, ta, cid)
    assert chat["last_read_seq"] == mine["seq"]
    assert_unread(chat, 0, 0)
    rec = receipts(client, ta, cid)
    assert rec[a["id"]]["last_read_seq"] == mine["seq"]
    assert rec[a["id"]]["last_delivered_seq"] >= mine["seq"]
    assert rec[b["id"]]["last_read_seq"] == b2["seq"]
    assert_unread(get_chat(client, tb, cid), 1, 0)


def test_mentions_count_only_for_the_mentioned(client):
    """unread_mentions counts messages that mention me, not others."""
    (a, ta), (b, tb), (c, tc) = new_users(client, 3)
    cid = make_group(client, ta, "g", [b["id"], c["id"]])["id"]
    send(client, ta, cid, "hey c", mentions=[c["id"]])
    send(client, ta, cid, "hey both", mentions=[b["id"], c["id"]])
    assert_unread(get_chat(client, tb, cid), 2, 1)
    assert_unread(get_chat(client, tc, cid), 2, 2)


def test_system_messages_are_not_unread(client):
    """System messages (rename, members added, roles) never count as unread."""
    (a, ta), (b, tb), (c, _) = new_users(client, 3)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    assert_status(client.patch(chat_path(cid), json={"title": "renamed"}, token=ta), 200)
    add_members(client, ta, cid, [c["id"]])
    set_role(client, ta, cid, c["id"], "admin")
    chat = get_chat(client, tb, cid)
    assert chat["last_seq"] == 4
    assert_unread(chat, 0, 0)


def test_late_member_unread_starts_at_join(client):
    """A member added later starts with last_read_seq at the join and nothing unread;
    later messages count."""
    (a, ta), (b, _), (c, tc) = new_users(client, 3)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    for i in range(3):
        send(client, ta, cid, f"before {i}", mentions=[b["id"]])
    add_members(client, ta, cid, [c["id"]])
    chat = get_chat(client, tc, cid)
    assert chat["last_read_seq"] == chat["last_seq"] - 1       # the join message is after it
    assert_unread(chat, 0, 0)
    send(client, ta, cid, "welcome", mentions=[c["id"]])
    assert_unread(get_chat(client, tc, cid), 1, 1)


def test_receipts_and_receipt_events(client):
    """GET receipts lists every member's last_read_seq / last_delivered_seq by user id; a
    read moves the reader's markers (read implies delivered) and sends a `receipt` event
    (kind read) to the reader and to the senders of the newly covered messages only."""
    (a, ta), (b, tb), (c, tc) = new_users(client, 3)
    cid = make_group(client, ta, "g", [b["id"], c["id"]])["id"]
    m1 = send(client, ta, cid, "from a")
    m2 = send(client, tc, cid, "from c")
    m3 = send(client, ta, cid, "from a again")
    rec = receipts(client, tb, cid)
    assert set(rec) == {a["id"], b["id"], c["id"]}
    assert rec[a["id"]]["last_read_seq"] == m3["seq"]
    assert rec[c["id"]]["last_read_seq"] == m2["seq"]
    assert rec[b["id"]]["last_read_seq"] == 0

    read(client, tb, cid, m1["seq"])
    rec = receipts(client, tc, cid)
    assert rec[b["id"]]["last_read_seq"] == m1["seq"]
    assert rec[b["id"]]["last_delivered_seq"] >= m1["seq"]
    assert (b["id"], m1["seq"]) in read_receipts(a["id"], cid)
    assert (b["id"], m1["seq"]) in read_receipts(b["id"], cid)
    assert read_receipts(c["id"], cid) == [], "c's message is not covered by b's read yet"

    read(client, tb, cid, m3["seq"])
    assert (b["id"], m3["seq"]) in read_receipts(a["id"], cid)
    assert (b["id"], m3["seq"]) in read_receipts(c["id"], cid)
    rec = receipts(client, ta, cid)
    assert rec[b["id"]]["last_read_seq"] == m3["seq"]
    assert rec[b["id"]]["last_delivered_seq"] >= m3["seq"]
    # read count of m2 (sent by c): a and b have read it
    readers = [u for u, x in rec.items() if u != c["id"] and x["last_read_seq"] >= m2["seq"]]
    assert sorted(readers) == sorted([a["id"], b["id"]])


def test_leaving_drops_chat_from_list(client):
    """After leaving a group, it disappears from the leaver's list (and GET is 404);
    the others' unread state is untouched."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    other = make_direct(client, ta, b["id"])["id"]
    for i in range(3):
        send(client, ta, cid, f"m{i}")
    assert_unread(get_chat(client, tb, cid), 3, 0)
    remove_member(client, tb, cid, b["id"])
    assert chat_ids_of(client, tb) == [other]
    assert_problem(client.get(chat_path(cid), token=tb), 404, "chat_not_found")
    assert_problem(read_raw(client, tb, cid, 1), 404, "chat_not_found")
    assert_unread(get_chat(client, ta, cid), 0, 0)
