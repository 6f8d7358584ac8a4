"""Members: list, add, remove, leave, ownership hand-over, roles, the system messages and
inbox events of membership changes, and what members see before and after their
membership (docs/CONTRACT.md, issue 3)."""
import pytest

from chatlib import (add_members, add_members_raw, bare_users, chat_path, chat_snapshot,
                     chat_ids_of, events, get_chat, get_message_raw, history_all,
                     history_page, history_page_raw, inbox_rows, last_seq_db, last_system,
                     make_direct, make_group, member_ids_db, members, memberships_of,
                     message_event_seqs, new_user, new_users, remove_member,
                     remove_member_raw, roles, send, send_raw, set_role, set_role_raw,
                     system_events)
from natterlib import RFC3339_UTC_RE, assert_problem, assert_status

UNKNOWN_USER_ID = 9_000_000_000_000


def membership_events(user_id, chat_id):
    return events(inbox_rows(user_id), "membership", chat_id)


def test_list_members(client):
    """GET members lists every member ordered by user id, each with the User, role,
    joined_at and read/delivered markers."""
    (a, ta), (b, tb), (c, _) = new_users(client, 3)
    cid = make_group(client, ta, "g", [c["id"], b["id"]])["id"]
    got = members(client, tb, cid)
    assert [m["user"]["id"] for m in got] == sorted([a["id"], b["id"], c["id"]])
    by_id = {m["user"]["id"]: m for m in got}
    assert by_id[a["id"]]["user"] == a and by_id[b["id"]]["user"] == b
    assert {k: m["role"] for k, m in by_id.items()} == {
        a["id"]: "owner", b["id"]: "member", c["id"]: "member"}
    for m in got:
        assert RFC3339_UTC_RE.match(m["joined_at"])
        assert isinstance(m["last_read_seq"], int) and isinstance(m["last_delivered_seq"], int)


def test_add_members_by_admin(client):
    """An admin adds users: 200 with only the newly added Members (already-members are
    ignored), a `members_added` system message naming them and the actor, a `membership`
    event for every member after the change and a `message` event for the system message;
    adding only existing members adds nothing and writes no system message."""
    (a, ta), (b, tb), (c, _), (d, td) = new_users(client, 4)
    cid = make_group(client, ta, "g", [b["id"], c["id"]])["id"]
    set_role(client, ta, cid, b["id"], "admin")
    added = add_members(client, tb, cid, [d["id"], c["id"], d["id"]])
    assert [m["user"]["id"] for m in added] == [d["id"]]
    assert added[0]["role"] == "member" and added[0]["user"] == d
    assert member_ids_db(cid) == {a["id"], b["id"], c["id"], d["id"]}
    chat = get_chat(client, td, cid)
    assert chat["member_count"] == 4 and chat["my_role"] == "member"

    sysmsg = last_system(client, ta, cid)
    assert sysmsg["system"]["event"] == "members_added"
    assert sysmsg["system"]["user_ids"] == [d["id"]]
    assert sysmsg["system"]["actor_id"] == b["id"]
    for user in (a, b, c, d):
        rows = inbox_rows(user["id"])
        ms = [p for p in events(rows, "membership", cid) if p["action"] == "added"]
        assert len(ms) == 1, f"user {user['id']}: membership events {ms}"
        assert ms[0]["user_ids"] == [d["id"]] and ms[0]["actor_id"] == b["id"]
        assert sysmsg["seq"] in message_event_seqs(rows, cid)

    last = last_seq_db(cid)
    assert add_members(client, tb, cid, [c["id"], a["id"]]) == []
    assert last_seq_db(cid) == last


def test_add_members_by_plain_member_forbidden(client):
    """A plain member adding users gets 403 forbidden; nobody is added, nothing written."""
    (a, ta), (b, tb) = new_users(client, 2)
    d = bare_users(client, 1)[0]
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    before = chat_snapshot(cid)
    assert_problem(add_members_raw(client, tb, cid, [d["id"]]), 403, "forbidden")
    assert chat_snapshot(cid) == before
    assert memberships_of(d["id"]) == 0


def test_add_unknown_user(client):
    """Adding a user id that does not exist is 422 unknown_user and adds nobody, not even
    the valid ids of the same request."""
    (a, ta), = new_users(client, 1)
    d = bare_users(client, 1)[0]
    cid = make_group(client, ta, "g")["id"]
    before = chat_snapshot(cid)
    r = add_members_raw(client, ta, cid, [d["id"], UNKNOWN_USER_ID])
    assert_problem(r, 422, "unknown_user", field="user_ids")
    assert chat_snapshot(cid) == before
    assert memberships_of(d["id"]) == 0


@pytest.mark.parametrize("body", [
    {"user_ids": []}, {"user_ids": "1"}, {"user_ids": ["x"]}, {"user_ids": [1.5]}, {},
    {"user_ids": None},
])
def test_add_members_validation(client, body):
    """An empty, missing or ill-typed user_ids is 422 validation_failed field=user_ids;
    nothing changes."""
    _, ta = new_user(client)
    cid = make_group(client, ta, "g")["id"]
    before = chat_snapshot(cid)
    r = client.post(chat_path(cid, "members"), json=body, token=ta)
    assert_problem(r, 422, "validation_failed", field="user_ids")
    assert chat_snapshot(cid) == before


def test_member_management_on_direct_chat(client):
    """Adding, removing or re-roling members of a direct chat is 409 not_a_group; nothing
    changes."""
    (a, ta), (b, _) = new_users(client, 2)
    d = bare_users(client, 1)[0]
    cid = make_direct(client, ta, b["id"])["id"]
    before = chat_snapshot(cid)
    assert_problem(add_members_raw(client, ta, cid, [d["id"]]), 409, "not_a_group")
    assert_problem(remove_member_raw(client, ta, cid, b["id"]), 409, "not_a_group")
    assert_problem(remove_member_raw(client, ta, cid, a["id"]), 409, "not_a_group")
    assert_problem(set_role_raw(client, ta, cid, b["id"], "admin"), 409, "not_a_group")
    assert chat_snapshot(cid) == before


def test_remove_member_by_admin(client):
    """An admin removes a member: 204, a `member_removed` system message, a `membership`
    event (action removed) for the removed user too; afterwards the removed user gets 404
    chat_not_found on everything and no more events of the chat. Admins cannot remove the
    owner and plain members cannot remove anyone (403, nothing changes); removing a
    non-member is 404 member_not_found."""
    (a, ta), (b, tb), (c, tc), (d, td) = new_users(client, 4)
    cid = make_group(client, ta, "g", [b["id"], c["id"], d["id"]])["id"]
    set_role(client, ta, cid, b["id"], "admin")
    msg = send(client, ta, cid, "before removal")

    remove_member(client, tb, cid, c["id"])
    assert member_ids_db(cid) == {a["id"], b["id"], d["id"]}
    sysmsg = last_system(client, ta, cid)
    assert sysmsg["system"]["event"] == "member_removed"
    assert sysmsg["system"]["user_ids"] == [c["id"]]
    assert sysmsg["system"]["actor_id"] == b["id"]
    removed = [p for p in membership_events(c["id"], cid) if p["action"] == "removed"]
    assert len(removed) == 1 and removed[0]["user_ids"] == [c["id"]]
    assert removed[0]["actor_id"] == b["id"]
    for user in (a, b, d):
        got = [p for p in membership_events(user["id"], cid) if p["action"] == "removed"]
        assert len(got) == 1, f"user {user['id']}: {got}"

    for r in (client.get(chat_path(cid), token=tc),
              client.get(chat_path(cid, "members"), token=tc),
              history_page_raw(client, tc, cid),
              get_message_raw(client, tc, cid, msg["seq"]),
              send_raw(client, tc, cid, "still here?")):
        assert_problem(r, 404, "chat_not_found")
    assert cid not in chat_ids_of(client, tc)

    later = send(client, ta, cid, "after removal")
    assert later["seq"] not in message_event_seqs(inbox_rows(c["id"]), cid)
    assert later["seq"] in message_event_seqs(inbox_rows(d["id"]), cid)

    before = chat_snapshot(cid)
    assert_problem(remove_member_raw(client, tb, cid, a["id"]), 403, "forbidden")
    assert_problem(remove_member_raw(client, td, cid, b["id"]), 403, "forbidden")
    assert_problem(remove_member_raw(client, ta, cid, c["id"]), 404, "member_not_found")
    assert_problem(remove_member_raw(client, ta, cid, UNKNOWN_USER_ID), 404,
                   "member_not_found")
    assert chat_snapshot(cid) == before
    assert roles(client, ta, cid)[a["id"]] == "owner"


def test_owner_removes_admin(client):
    """The owner may remove an admin (204); the admin is gone."""
    (a, ta), (b, _) = new_users(client, 2)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    set_role(client, ta, cid, b["id"], "admin")
    remove_member(client, ta, cid, b["id"])
    assert member_ids_db(cid) == {a["id"]}


def test_leave(client):
    """A member removing themself leaves: 204, a `member_left` system message by them, a
    `membership` event (action left); afterwards the chat is 404 chat_not_found for them,
    including a second leave."""
    (a, ta), (b, tb), (c, _) = new_users(client, 3)
    cid = make_group(client, ta, "g", [b["id"], c["id"]])["id"]
    remove_member(client, tb, cid, b["id"])
    assert member_ids_db(cid) == {a["id"], c["id"]}
    sysmsg = last_system(client, ta, cid)
    assert sysmsg["system"]["event"] == "member_left"
    assert sysmsg["system"]["actor_id"] == b["id"]
    assert sysmsg["system"].get("user_ids") in (None, [b["id"]])
    for user in (a, b, c):
        got = [p for p in membership_events(user["id"], cid) if p["action"] == "left"]
        assert len(got) == 1 and got[0]["user_ids"] == [b["id"]], f"user {user['id']}: {got}"
    assert_problem(client.get(chat_path(cid), token=tb), 404, "chat_not_found")
    assert_problem(remove_member_raw(client, tb, cid, b["id"]), 404, "chat_not_found")
    assert get_chat(client, ta, cid)["member_count"] == 2


def test_last_owner_leaving_hands_ownership_to_longest_admin(client):
    """When the last owner leaves, the longest-standing admin becomes owner (a member who
    joined earlier and a later admin stay as they are)."""
    (o, to), (m1, _), (a1, t1), (a2, _) = new_users(client, 4)
    cid = make_group(client, to, "g", [m1["id"], a1["id"]])["id"]
    add_members(client, to, cid, [a2["id"]])
    set_role(client, to, cid, a1["id"], "admin")
    set_role(client, to, cid, a2["id"], "admin")
    remove_member(client, to, cid, o["id"])
    assert roles(client, t1, cid) == {m1["id"]: "member", a1["id"]: "owner",
                                      a2["id"]: "admin"}
    assert get_chat(client, t1, cid)["my_role"] == "owner"


def test_last_owner_leaving_hands_ownership_to_longest_member(client):
    """Without admins, the longest-standing member becomes owner when the last owner
    leaves."""
    (o, to), (m1, t1), (m2, _) = new_users(client, 3)
    cid = make_group(client, to, "g", [m1["id"]])["id"]
    add_members(client, to, cid, [m2["id"]])
    remove_member(client, to, cid, o["id"])
    assert roles(client, t1, cid) == {m1["id"]: "owner", m2["id"]: "member"}
    # the new owner can act as one
    r = client.patch(chat_path(cid), json={"title": "mine now"}, token=t1)
    assert_status(r, 200)


def test_owner_leaving_with_another_owner(client):
    """An owner leaving while another owner remains hands nothing over."""
    (o, to), (o2, t2), (m, _) = new_users(client, 3)
    cid = make_group(client, to, "g", [o2["id"], m["id"]])["id"]
    set_role(client, to, cid, o2["id"], "owner")
    remove_member(client, to, cid, o["id"])
    assert roles(client, t2, cid) == {o2["id"]: "owner", m["id"]: "member"}


def test_role_changes(client):
    """Roles: the owner sets any role (200 Member, `role_changed` system message and
    `membership` event); an admin switches non-owners between member and admin but cannot
    touch an owner or make owners (403); a plain member cannot change roles (403);
    demoting the only owner is 409 last_owner; a bad role is 422; a non-member is 404
    member_not_found. Refused changes change nothing."""
    (a, ta), (b, tb), (c, _), (d, td) = new_users(client, 4)
    outsider = bare_users(client, 1)[0]
    cid = make_group(client, ta, "g", [b["id"], c["id"], d["id"]])["id"]

    m = set_role(client, ta, cid, b["id"], "admin")
    assert m["role"] == "admin" and m["user"] == b
    sysmsg = last_system(client, td, cid)
    assert sysmsg["system"]["event"] == "role_changed"
    assert sysmsg["system"]["user_ids"] == [b["id"]]
    assert sysmsg["system"]["role"] == "admin"
    assert sysmsg["system"]["actor_id"] == a["id"]
    got = [p for p in membership_events(d["id"], cid) if p["action"] == "role_changed"]
    assert len(got) == 1 and got[0]["user_ids"] == [b["id"]] and got[0]["role"] == "admin"

    assert set_role(client, tb, cid, c["id"], "admin")["role"] == "admin"
    assert set_role(client, tb, cid, c["id"], "member")["role"] == "member"

    before = chat_snapshot(cid)
    assert_problem(set_role_raw(client, tb, cid, a["id"], "member"), 403, "forbidden")
    assert_problem(set_role_raw(client, tb, cid, a["id"], "admin"), 403, "forbidden")
    assert_problem(set_role_raw(client, tb, cid, d["id"], "owner"), 403, "forbidden")
    assert_problem(set_role_raw(client, tb, cid, b["id"], "owner"), 403, "forbidden")
    assert_problem(set_role_raw(client, td, cid, c["id"], "admin"), 403, "forbidden")
    assert_problem(set_role_raw(client, td, cid, d["id"], "admin"), 403, "forbidden")
    assert_problem(set_role_raw(client, ta, cid, a["id"], "admin"), 409, "last_owner")
    assert_problem(set_role_raw(client, ta, cid, a["id"], "member"), 409, "last_owner")
    for bad in ("king", "", "Owner", None, 1):
        assert_problem(set_role_raw(client, ta, cid, c["id"], bad), 422, "validation_failed",
                       field="role")
    assert_problem(set_role_raw(client, ta, cid, outsider["id"], "admin"), 404,
                   "member_not_found")
    assert chat_snapshot(cid) == before
    assert roles(client, ta, cid) == {a["id"]: "owner", b["id"]: "admin",
                                      c["id"]: "member", d["id"]: "member"}

    assert set_role(client, ta, cid, b["id"], "owner")["role"] == "owner"
    assert set_role(client, ta, cid, a["id"], "member")["role"] == "member"
    assert roles(client, tb, cid) == {a["id"]: "member", b["id"]: "owner",
                                      c["id"]: "member", d["id"]: "member"}


def test_membership_changes_write_system_messages(client):
    """Every membership change leaves a system message in the history, in order, with
    its actor: created, members_added, role_changed, member_removed, member_left."""
    (a, ta), (b, tb), (c, _), (d, _) = new_users(client, 4)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    add_members(client, ta, cid, [c["id"], d["id"]])
    set_role(client, ta, cid, b["id"], "admin")
    remove_member(client, tb, cid, c["id"])
    remove_member(client, tb, cid, b["id"])
    got = [(seq, ev, s["actor_id"], sorted(s.get("user_ids") or []))
           for seq, ev, s in system_events(history_all(client, ta, cid))]
    assert got == [
        (1, "created", a["id"], got[0][3]),
        (2, "members_added", a["id"], sorted([c["id"], d["id"]])),
        (3, "role_changed", a["id"], [b["id"]]),
        (4, "member_removed", b["id"], [c["id"]]),
        (5, "member_left", b["id"], got[4][3]),
    ]
    assert b["id"] in got[0][3]
    assert got[4][3] in ([], [b["id"]])


def test_late_member_sees_history_from_join(client):
    """A member added later does not see messages from before the join (absent from
    history; GET 404 message_not_found; not replyable), but sees the `members_added`
    system message that added them and everything after; their read marker starts at the
    join."""
    (a, ta), (b, _), (c, tc) = new_users(client, 3)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    old1 = send(client, ta, cid, "before c joined 1")
    old2 = send(client, ta, cid, "before c joined 2")
    add_members(client, ta, cid, [c["id"]])
    join = last_system(client, ta, cid)
    assert join["system"]["event"] == "members_added" and c["id"] in join["system"]["user_ids"]
    new = send(client, ta, cid, "after c joined")

    for walk in ("backward", "forward"):
        seen = history_all(client, tc, cid, walk, limit=1)
        assert [m["seq"] for m in seen] == [join["seq"], new["seq"]], walk
    for seq in (1, old1["seq"], old2["seq"]):
        assert_problem(get_message_raw(client, tc, cid, seq), 404, "message_not_found")
    assert history_page(client, tc, cid, before=join["seq"])["messages"] == []
    page = history_page(client, tc, cid, after=0)
    assert page["prev_cursor"] is None
    assert [m["seq"] for m in page["messages"]] == [join["seq"], new["seq"]]
    r = send_raw(client, tc, cid, "replying to the past", reply_to_seq=old1["seq"])
    assert_problem(r, 422, "validation_failed", field="reply_to_seq")
    assert get_message_raw(client, tc, cid, new["seq"]).status_code == 200

    chat = get_chat(client, tc, cid)
    assert chat["last_read_seq"] == join["seq"] - 1
    assert chat["unread_count"] == 1
    assert chat["last_message"]["seq"] == new["seq"]
    me = [m for m in members(client, tc, cid) if m["user"]["id"] == c["id"]][0]
    assert me["last_read_seq"] == join["seq"] - 1
    seqs = message_event_seqs(inbox_rows(c["id"]), cid)
    assert old1["seq"] not in seqs and new["seq"] in seqs


def test_readding_a_removed_member_starts_from_new_join(client):
    """A member removed and added again sees history only from the new join."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    send(client, ta, cid, "b saw this")
    remove_member(client, ta, cid, b["id"])
    hidden = send(client, ta, cid, "b was away")
    add_members(client, ta, cid, [b["id"]])
    rejoin = last_system(client, ta, cid)
    seen = [m["seq"] for m in history_all(client, tb, cid)]
    assert seen[0] == rejoin["seq"]
    assert_problem(get_message_raw(client, tb, cid, hidden["seq"]), 404, "message_not_found")
    assert roles(client, tb, cid)[b["id"]] == "member"
