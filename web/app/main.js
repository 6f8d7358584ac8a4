// main.js — the Natter web client: plain DOM, no framework, no build step.
//
// State lives in `S`; every change calls a render function for the part it
// touched. Receiving: one tab per browser profile (the holder of a Web Lock)
// long-polls GET /v1/events with the device's cursor (kept in localStorage
// across reloads) and hands each event to every tab over a BroadcastChannel.
// Sending: a message is shown at once as pending, kept in a localStorage
// outbox, and retried with the same client_msg_id until the server answers;
// the server keeps client_msg_id forever, so a retry never makes a second
// message.
import { Api, ApiError, describeError, fmtBytes, loadSession, serverUrl, setServerUrl, uuid } from "./api.js";
import { sha256 } from "./sha256.js";

const api = new Api();
const REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
const TYPING_TTL = 6000;
const app = document.getElementById("app");

const S = {
  me: null,
  limits: null,
  chats: new Map(), // id -> Chat
  chatsCursor: null,
  chatsMore: false,
  openId: null,
  views: new Map(), // chat id -> {msgs: Map seq->Message, prev, loaded, members, receipts}
  users: new Map(), // id -> User
  presence: new Map(), // user id -> {online, last_seen_at}
  typing: new Map(), // chat id -> Map user id -> expiry ms
  replyTo: null, // {chat_id, seq}
  editing: null, // {chat_id, seq}
  online: true,
  stick: true, // the conversation is scrolled to its end: keep it there as it grows
};

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);

function toast(msg, kind = "error") {
  const box = $("#toasts") || document.body.appendChild(h("div", { id: "toasts", role: "status" }));
  const t = h("div", { class: `toast ${kind}`, "data-testid": "toast", text: msg });
  box.append(t);
  setTimeout(() => t.remove(), 6000);
}

function fail(e) {
  if (e && e.name === "AbortError") return;
  console.warn(e);
  toast(describeError(e, S.limits));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function timeOf(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function dayOf(iso) {
  const d = new Date(iso);
  const today = new Date();
  const y = new Date(Date.now() - 86400000);
  if (d.toDateString() === today.toDateString()) return "Today";
  if (d.toDateString() === y.toDateString()) return "Yesterday";
  return d.toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

function userName(id) {
  if (id === S.me.id) return "You";
  const u = S.users.get(id);
  return u ? u.display_name || u.username : `user ${id}`;
}

async function loadUsers(ids) {
  const missing = [...new Set(ids)].filter((id) => id && !S.users.has(id));
  await Promise.all(missing.map((id) => api.get(`/v1/users/${id}`).then((u) => S.users.set(u.id, u)).catch(() => {})));
}

// ---------------------------------------------------------------- start

api.onSignedOut = () => {
  stopEverything();
  renderLogin("You were signed out.");
};

const channel = "BroadcastChannel" in window ? new BroadcastChannel("natter") : null;
if (channel)
  channel.onmessage = (ev) => {
    const m = ev.data;
    if (m.kind === "events" && S.me) m.events.forEach(applyEvent);
    if (m.kind === "reset" && S.me) resync();
    if (m.kind === "signout" && S.me) api.signOutLocal();
  };
window.addEventListener("storage", (ev) => {
  if (ev.key === "natter.session" && !ev.newValue && S.me) {
    stopEverything();
    renderLogin("You were signed out.");
  }
  if (ev.key === "natter.session" && ev.newValue && !S.me) boot();
});

let aborter = new AbortController();
function stopEverything() {
  aborter.abort();
  aborter = new AbortController();
  S.me = null;
  S.chats.clear();
  S.views.clear();
  S.openId = null;
}

async function boot() {
  const s = loadSession();
  if (!s) return renderLogin();
  S.me = s.user;
  S.users.set(s.user.id, s.user);
  renderShell();
  api.get("/v1/limits", { auth: false }).then((l) => (S.limits = l)).catch(() => {});
  try {
    S.me = await api.get("/v1/users/me");
    S.users.set(S.me.id, S.me);
    renderMe();
    await loadChats(true);
  } catch (e) {
    if (!loadSession()) return;
    fail(e);
  }
  const hash = Number(location.hash.replace("#chat-", ""));
  if (hash && S.chats.has(hash)) openChat(hash);
  startPolling(aborter.signal);
  flushOutbox();
  if (!timersStarted) {
    timersStarted = true;
    setInterval(tickTyping, 1000);
    setInterval(refreshPresence, 30000);
  }
}
let timersStarted = false;

// ---------------------------------------------------------------- login

function renderLogin(note) {
  app.replaceChildren();
  const err = h("p", { class: "form-error", role: "alert", "data-testid": "login-error" });
  const server = h("input", { id: "server", name: "server", placeholder: location.origin, value: serverUrl() });
  const form = (mode) => {
    const username = h("input", { name: "username", autocomplete: "username", required: true, minlength: 3, maxlength: 32 });
    const password = h("input", {
      name: "password",
      type: "password",
      autocomplete: mode === "login" ? "current-password" : "new-password",
      required: true,
      minlength: 8,
    });
    const display = h("input", { name: "display_name", autocomplete: "name", maxlength: 64 });
    return h(
      "form",
      {
        class: "card",
        "data-testid": `${mode}-form`,
        onsubmit: async (ev) => {
          ev.preventDefault();
          err.textContent = "";
          setServerUrl(server.value);
          try {
            if (mode === "register") await api.register(username.value, password.value, display.value || undefined);
            await api.login(username.value, password.value);
            boot();
          } catch (e) {
            err.textContent = describeError(e, null);
          }
        },
      },
      h("h2", { text: mode === "login" ? "Sign in" : "Create an account" }),
      h("label", {}, "Username", username),
      mode === "register" ? h("label", {}, "Display name (optional)", display) : null,
      h("label", {}, "Password", password),
      h("button", { type: "submit", class: "primary", text: mode === "login" ? "Sign in" : "Register and sign in" }),
    );
  };
  app.append(
    h(
      "main",
      { class: "login" },
      h("h1", {}, h("img", { src: "app/icon.svg", alt: "", width: 40, height: 40 }), " Natter"),
      note ? h("p", { class: "note", text: note }) : null,
      err,
      h("div", { class: "login-forms" }, form("login"), form("register")),
      h(
        "details",
        { class: "server" },
        h("summary", { text: "Server" }),
        h("label", {}, "natter-api URL (empty: this site)", server),
      ),
      h("p", { class: "muted" }, h("a", { href: "docs", text: "API reference" })),
    ),
  );
}

// ---------------------------------------------------------------- shell

function renderShell() {
  app.replaceChildren(
    h(
      "div",
      { class: "shell", id: "shell" },
      h(
        "aside",
        { class: "sidebar", "aria-label": "Chats" },
        h(
          "header",
          { class: "bar" },
          h("span", { id: "me", class: "me" }),
          h("span", { id: "conn", class: "conn", "data-testid": "conn" }),
          h("button", { class: "icon", title: "New group", "aria-label": "New group", onclick: newGroupDialog, text: "👥" }),
          h("button", { class: "icon", title: "Settings", "aria-label": "Settings", onclick: settingsDialog, text: "⚙" }),
        ),
        h(
          "form",
          {
            class: "start-direct",
            onsubmit: async (ev) => {
              ev.preventDefault();
              const input = ev.target.elements.who;
              const name = input.value.trim();
              if (!name) return;
              try {
                const u = await api.get(`/v1/users?username=${encodeURIComponent(name)}`);
                S.users.set(u.id, u);
                const c = await api.post("/v1/chats", { kind: "direct", user_id: u.id });
                upsertChat(c);
                input.value = "";
                openChat(c.id);
              } catch (e) {
                toast(e.code === "user_not_found" ? `No user named “${name}”.` : describeError(e, S.limits));
              }
            },
          },
          h("input", { name: "who", placeholder: "Start a chat with @username", "aria-label": "Username to chat with", "data-testid": "start-direct" }),
          h("button", { type: "submit", text: "Chat" }),
        ),
        h("ul", { id: "chatlist", class: "chatlist", role: "listbox", "aria-label": "Chat list" }),
        h("button", { id: "more-chats", class: "link", hidden: true, onclick: () => loadChats(false).catch(fail), text: "Load more chats" }),
      ),
      h("section", { class: "chat", id: "chatpane", "aria-label": "Conversation" }, h("div", { class: "empty", text: "Pick a chat, or start one with a username." })),
    ),
  );
  renderMe();
}

function renderMe() {
  const el = $("#me");
  if (el && S.me) el.textContent = S.me.display_name || S.me.username;
}

function setConn(ok, text) {
  S.online = ok;
  const el = $("#conn");
  if (!el) return;
  el.textContent = ok ? "" : text;
  el.className = ok ? "conn" : "conn down";
}

// ---------------------------------------------------------------- chat list

async function loadChats(first) {
  const q = first ? "" : `&cursor=${encodeURIComponent(S.chatsCursor)}`;
  const r = await api.get(`/v1/chats?limit=30${q}`);
  if (first) S.chats.clear();
  for (const c of r.chats) {
    S.chats.set(c.id, c);
    if (c.other_user) S.users.set(c.other_user.id, c.other_user);
  }
  S.chatsCursor = r.next_cursor;
  S.chatsMore = !!r.next_cursor;
  renderChatList();
  refreshPresence();
}

function upsertChat(c) {
  S.chats.set(c.id, c);
  if (c.other_user) S.users.set(c.other_user.id, c.other_user);
  renderChatList();
}

function chatTitle(c) {
  return c.kind === "direct" && c.other_user ? c.other_user.display_name || c.other_user.username : c.title;
}

function preview(m) {
  if (!m) return "";
  if (m.deleted_at) return "Message deleted";
  if (m.kind === "system") return systemText(m);
  const who = m.sender_id === S.me.id ? "You: " : "";
  return who + (m.text || "").slice(0, 80);
}

function renderChatList() {
  const ul = $("#chatlist");
  if (!ul) return;
  const chats = [...S.chats.values()].sort(
    (a, b) => (b.last_message_at || b.created_at).localeCompare(a.last_message_at || a.created_at) || b.id - a.id,
  );
  ul.replaceChildren(
    ...chats.map((c) => {
      const other = c.other_user && S.presence.get(c.other_user.id);
      return h(
        "li",
        {
          class: `chatitem${c.has_unread ? " unread" : ""}${c.id === S.openId ? " active" : ""}`,
          role: "option",
          tabindex: 0,
          "aria-selected": c.id === S.openId ? "true" : "false",
          "data-testid": "chat-item",
          "data-chat-id": c.id,
          onclick: () => openChat(c.id),
          onkeydown: (ev) => {
            if (ev.key === "Enter" || ev.key === " ") {
              ev.preventDefault();
              openChat(c.id);
            }
          },
        },
        h(
          "span",
          { class: "avatar" },
          (chatTitle(c) || "?").slice(0, 1).toUpperCase(),
          c.kind === "direct" ? h("span", { class: `dot${other && other.online ? " on" : ""}`, title: other && other.online ? "online" : "offline" }) : null,
        ),
        h(
          "span",
          { class: "chatmeta" },
          h("span", { class: "title", text: chatTitle(c) }),
          h("span", { class: "preview", text: preview(c.last_message) }),
        ),
        h(
          "span",
          { class: "badges" },
          h("span", { class: "time", text: c.last_message_at ? timeOf(c.last_message_at) : "" }),
          c.unread_mentions ? h("span", { class: "badge mention", title: "mentions", text: "@" }) : null,
          c.unread_count ? h("span", { class: "badge", "data-testid": "unread", text: String(c.unread_count) }) : null,
          c.muted ? h("span", { class: "muted-icon", title: "muted", text: "🔕" }) : null,
        ),
      );
    }),
  );
  const more = $("#more-chats");
  if (more) more.hidden = !S.chatsMore;
}

// ---------------------------------------------------------------- chat view

function view(id) {
  let v = S.views.get(id);
  if (!v) {
    v = { msgs: new Map(), prev: null, loaded: false, members: [], receipts: new Map(), loadingOlder: false };
    S.views.set(id, v);
  }
  return v;
}

async function openChat(id) {
  S.openId = id;
  S.replyTo = null;
  S.editing = null;
  history.replaceState(null, "", `#chat-${id}`);
  $("#shell")?.classList.add("in-chat");
  renderChatList();
  renderChatPane();
  const v = view(id);
  try {
    if (!v.loaded) {
      const r = await api.get(`/v1/chats/${id}/messages?limit=50`);
      for (const m of r.messages) v.msgs.set(m.seq, m);
      v.prev = r.prev_cursor;
      v.loaded = true;
    }
    await loadMembers(id);
    renderMessages(true);
    markRead();
  } catch (e) {
    if (e.code === "chat_not_found") {
      S.chats.delete(id);
      S.openId = null;
      renderChatList();
      renderChatPane();
    }
    fail(e);
  }
}

async function loadMembers(id) {
  const v = view(id);
  const [m, r] = await Promise.all([api.get(`/v1/chats/${id}/members`), api.get(`/v1/chats/${id}/receipts`)]);
  v.members = m.members;
  for (const mm of m.members) S.users.set(mm.user.id, mm.user);
  v.receipts = new Map(r.receipts.map((x) => [x.user_id, x]));
  await refreshPresence();
  if (S.openId === id) renderHeader();
}

async function loadOlder() {
  const id = S.openId;
  const v = view(id);
  if (!v.prev || v.loadingOlder) return;
  v.loadingOlder = true;
  try {
    const r = await api.get(`/v1/chats/${id}/messages?before=${v.prev}&limit=50`);
    for (const m of r.messages) v.msgs.set(m.seq, m);
    v.prev = r.prev_cursor;
    const box = $("#messages");
    const fromBottom = box ? box.scrollHeight - box.scrollTop : 0;
    renderMessages(false);
    if (box) box.scrollTop = box.scrollHeight - fromBottom;
  } catch (e) {
    fail(e);
  } finally {
    v.loadingOlder = false;
  }
}

function renderChatPane() {
  const pane = $("#chatpane");
  if (!pane) return;
  const c = S.chats.get(S.openId);
  if (!c) {
    $("#shell")?.classList.remove("in-chat");
    pane.replaceChildren(h("div", { class: "empty", text: "Pick a chat, or start one with a username." }));
    return;
  }
  const text = h("textarea", {
    id: "composer",
    rows: 1,
    placeholder: "Message",
    "aria-label": "Message",
    "data-testid": "composer",
    onkeydown: (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        submitComposer();
      } else if (ev.key === "Escape") {
        S.replyTo = null;
        S.editing = null;
        text.value = "";
        renderComposerBar();
      }
    },
    oninput: () => {
      autoGrow(text);
      typingInput();
    },
  });
  const file = h("input", {
    type: "file",
    id: "file",
    hidden: true,
    "data-testid": "file-input",
    onchange: () => {
      for (const f of file.files) uploadAndSend(S.openId, f);
      file.value = "";
    },
  });
  pane.replaceChildren(
    h(
      "header",
      { class: "bar chathead" },
      h("button", { class: "icon back", "aria-label": "Back to chats", onclick: () => { S.openId = null; renderChatList(); renderChatPane(); }, text: "←" }),
      h("div", { class: "headtext" }, h("strong", { id: "chat-title", "data-testid": "chat-title" }), h("span", { id: "chat-sub", class: "sub", "data-testid": "chat-sub" })),
      h("button", { class: "icon", title: "Chat details", "aria-label": "Chat details", "data-testid": "chat-info", onclick: chatInfoDialog, text: "ℹ️" }),
    ),
    h("div", {
      id: "messages",
      class: "messages",
      role: "log",
      "aria-label": "Messages",
      tabindex: 0,
      onscroll: (ev) => {
        if (ev.target.scrollTop < 80) loadOlder();
        S.stick = atBottom();
        if (S.stick) markRead();
      },
    }),
    h("div", { id: "typing", class: "typing", "data-testid": "typing", "aria-live": "polite" }),
    h("div", { id: "composer-bar", class: "composer-bar" }),
    h(
      "form",
      {
        class: "composer",
        onsubmit: (ev) => {
          ev.preventDefault();
          submitComposer();
        },
      },
      file,
      h("button", { type: "button", class: "icon", title: "Attach a file", "aria-label": "Attach a file", onclick: () => file.click(), text: "📎" }),
      text,
      h("button", { type: "submit", class: "primary", "data-testid": "send", text: "Send" }),
    ),
  );
  pane.ondragover = (ev) => {
    ev.preventDefault();
    pane.classList.add("drop");
  };
  pane.ondragleave = () => pane.classList.remove("drop");
  pane.ondrop = (ev) => {
    ev.preventDefault();
    pane.classList.remove("drop");
    for (const f of ev.dataTransfer.files) uploadAndSend(S.openId, f);
  };
  renderHeader();
  renderMessages(true);
  renderComposerBar();
  text.focus();
}

function autoGrow(t) {
  t.style.height = "auto";
  t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
}

function renderHeader() {
  const c = S.chats.get(S.openId);
  if (!c || !$("#chat-title")) return;
  $("#chat-title").textContent = chatTitle(c);
  let sub = "";
  if (c.kind === "direct" && c.other_user) {
    const p = S.presence.get(c.other_user.id);
    sub = p && p.online ? "online" : `last seen ${ago(p && p.last_seen_at)}`;
  } else sub = `${c.member_count} members`;
  $("#chat-sub").textContent = sub;
}

function atBottom() {
  const box = $("#messages");
  return !box || box.scrollHeight - box.scrollTop - box.clientHeight < 40;
}

function systemText(m) {
  const s = m.system || {};
  const who = userName(s.actor_id);
  const names = (s.user_ids || []).map(userName).join(", ");
  switch (s.event) {
    case "created":
      return `${who} created the group${s.title ? ` “${s.title}”` : ""}`;
    case "members_added":
      return `${who} added ${names}`;
    case "member_removed":
      return `${who} removed ${names}`;
    case "member_left":
      return `${who} left`;
    case "role_changed":
      return `${who} made ${names} ${s.role}`;
    case "renamed":
      return `${who} renamed the group to “${s.title}”`;
    default:
      return s.event || "system message";
  }
}

// delivered/read state of my message seq in chat c
function receiptState(c, seq) {
  const v = view(c.id);
  const others = [...v.receipts.values()].filter((r) => r.user_id !== S.me.id);
  const read = others.filter((r) => r.last_read_seq >= seq);
  const delivered = others.filter((r) => r.last_delivered_seq >= seq);
  if (c.kind === "group") return { state: read.length ? "read" : delivered.length ? "delivered" : "sent", readers: read.map((r) => r.user_id) };
  if (others.length && read.length === others.length) return { state: "read", readers: read.map((r) => r.user_id) };
  if (others.length && delivered.length === others.length) return { state: "delivered", readers: [] };
  return { state: "sent", readers: [] };
}

function renderText(m) {
  const text = m.text || "";
  const names = new Map();
  for (const id of m.mentions || []) {
    const u = S.users.get(id);
    if (u) names.set(`@${u.username}`.toLowerCase(), id);
  }
  const out = [];
  for (const part of text.split(/(@[A-Za-z0-9_.-]+)/)) {
    if (part.startsWith("@") && names.has(part.toLowerCase()))
      out.push(h("span", { class: `mention${names.get(part.toLowerCase()) === S.me.id ? " me" : ""}`, text: part }));
    else if (part) out.push(part);
  }
  return out;
}

function renderMessages(stick) {
  const box = $("#messages");
  const c = S.chats.get(S.openId);
  if (!box || !c) return;
  const v = view(c.id);
  const bottom = stick || S.stick;
  const msgs = [...v.msgs.values()].sort((a, b) => a.seq - b.seq);
  const confirmed = new Set(msgs.filter((m) => m.sender_id === S.me.id).map((m) => m.client_msg_id));
  const pending = outboxFor(c.id).filter((p) => !confirmed.has(p.client_msg_id));
  const items = [];
  if (v.prev) items.push(h("button", { class: "link older", onclick: loadOlder, text: "Load older messages" }));
  else if (v.loaded) items.push(h("div", { class: "daysep", text: "Beginning of the conversation" }));
  let lastDay = "";
  for (const m of msgs) {
    const day = dayOf(m.created_at);
    if (day !== lastDay) {
      items.push(h("div", { class: "daysep", "data-testid": "day-separator", text: day }));
      lastDay = day;
    }
    items.push(renderMessage(c, m));
  }
  for (const p of pending) items.push(renderPending(p));
  box.replaceChildren(...items);
  if (bottom) {
    S.stick = true;
    box.scrollTop = box.scrollHeight;
  }
}

// an image that loads later grows the conversation: stay at its end if we were
function keepAtEnd() {
  const box = $("#messages");
  if (box && S.stick) box.scrollTop = box.scrollHeight;
}

function renderMessage(c, m) {
  if (m.kind === "system")
    return h("div", { class: "system", "data-seq": m.seq, "data-testid": "system-message", text: systemText(m) });
  const mine = m.sender_id === S.me.id;
  const v = view(c.id);
  const el = h("div", {
    class: `msg${mine ? " mine" : ""}${m.deleted_at ? " deleted" : ""}`,
    "data-seq": m.seq,
    "data-testid": "message",
    "data-cmid": m.client_msg_id || "",
    tabindex: 0,
  });
  if (!mine && c.kind === "group") el.append(h("div", { class: "sender", text: userName(m.sender_id) }));
  if (m.reply_to_seq) {
    const q = v.msgs.get(m.reply_to_seq);
    el.append(
      h("div", {
        class: "quote",
        "data-testid": "quote",
        text: q ? `${userName(q.sender_id)}: ${q.deleted_at ? "deleted message" : (q.text || "").slice(0, 100)}` : `Reply to message #${m.reply_to_seq}`,
      }),
    );
  }
  if (m.deleted_at) el.append(h("div", { class: "body", "data-testid": "tombstone", text: "This message was deleted" }));
  else {
    el.append(h("div", { class: "body", "data-testid": "text" }, renderText(m)));
    for (const a of m.attachments || []) el.append(renderAttachment(a));
  }
  const meta = h("div", { class: "meta" }, m.edited_at && !m.deleted_at ? h("span", { class: "edited", text: "edited" }) : null, h("time", { datetime: m.created_at, text: timeOf(m.created_at) }));
  if (mine && !m.deleted_at) {
    const r = receiptState(c, m.seq);
    const label = r.state === "read" ? (c.kind === "group" ? `read by ${r.readers.length}` : "read") : r.state;
    const tick = h("button", {
      class: `receipt ${r.state}`,
      "data-testid": "receipt",
      "data-state": r.state,
      title: label,
      text: `${r.state === "sent" ? "✓" : "✓✓"} ${label}`,
      onclick: () => {
        if (c.kind === "group" && r.readers.length) toast(`Read by ${r.readers.map(userName).join(", ")}`, "info");
      },
    });
    meta.append(tick);
  }
  el.append(meta);
  if (!m.deleted_at && m.reactions && m.reactions.length)
    el.append(
      h(
        "div",
        { class: "reactions" },
        m.reactions.map((r) =>
          h("button", { class: `reaction${r.me ? " me" : ""}`, "aria-pressed": r.me ? "true" : "false", onclick: () => toggleReaction(c.id, m, r.emoji), text: `${r.emoji} ${r.count}` }),
        ),
      ),
    );
  if (!m.deleted_at) {
    const actions = h("div", { class: "actions" });
    actions.append(h("button", { class: "link", "data-testid": "reply", onclick: () => { S.replyTo = { chat_id: c.id, seq: m.seq }; S.editing = null; renderComposerBar(); $("#composer").focus(); }, text: "Reply" }));
    for (const e of REACTIONS.slice(0, 3)) actions.append(h("button", { class: "link", "aria-label": `React ${e}`, onclick: () => toggleReaction(c.id, m, e), text: e }));
    const more = h("select", { "aria-label": "More reactions", onchange: (ev) => { if (ev.target.value) toggleReaction(c.id, m, ev.target.value); ev.target.value = ""; } }, h("option", { value: "", text: "＋" }), REACTIONS.slice(3).map((e) => h("option", { value: e, text: e })));
    actions.append(more);
    if (mine) {
      actions.append(h("button", { class: "link", "data-testid": "edit", onclick: () => { S.editing = { chat_id: c.id, seq: m.seq }; S.replyTo = null; const t = $("#composer"); t.value = m.text; renderComposerBar(); t.focus(); }, text: "Edit" }));
    }
    const admin = c.kind === "group" && (c.my_role === "owner" || c.my_role === "admin");
    if (mine || admin)
      actions.append(h("button", { class: "link danger", "data-testid": "delete", onclick: () => { if (confirm("Delete this message for everyone?")) api.del(`/v1/chats/${c.id}/messages/${m.seq}`).catch(fail); }, text: "Delete" }));
    el.append(actions);
  }
  return el;
}

function renderPending(p) {
  return h(
    "div",
    { class: `msg mine pending${p.failed ? " failed" : ""}`, "data-testid": "message", "data-pending": "true", "data-cmid": p.client_msg_id },
    h("div", { class: "body", "data-testid": "text", text: p.text }),
    h(
      "div",
      { class: "meta" },
      p.failed
        ? h("span", { class: "receipt failed", "data-testid": "receipt", "data-state": "failed", text: `Not sent: ${p.failed}` })
        : h("span", { class: "receipt pending", "data-testid": "receipt", "data-state": "pending", text: "🕓 sending…" }),
      p.failed ? h("button", { class: "link", onclick: () => { p.failed = null; saveOutboxItem(p); flushOutbox(); }, text: "Retry" }) : null,
      p.failed ? h("button", { class: "link danger", onclick: () => { dropOutbox(p.client_msg_id); renderMessages(false); }, text: "Discard" }) : null,
    ),
  );
}

function renderComposerBar() {
  const bar = $("#composer-bar");
  if (!bar) return;
  bar.replaceChildren();
  const v = view(S.openId);
  if (S.replyTo) {
    const q = v.msgs.get(S.replyTo.seq);
    bar.append(h("span", { text: `Replying to ${q ? userName(q.sender_id) : "message"}: ${q ? (q.text || "").slice(0, 60) : ""}` }), h("button", { class: "link", onclick: () => { S.replyTo = null; renderComposerBar(); }, text: "Cancel" }));
  } else if (S.editing) {
    bar.append(h("span", { text: "Editing your message" }), h("button", { class: "link", onclick: () => { S.editing = null; $("#composer").value = ""; renderComposerBar(); }, text: "Cancel" }));
  }
  bar.hidden = !bar.childElementCount;
}

// ---------------------------------------------------------------- sending

function outboxAll() {
  try {
    return JSON.parse(localStorage.getItem(`natter.outbox.${S.me.id}`) || "[]");
  } catch {
    return [];
  }
}
function outboxSave(list) {
  localStorage.setItem(`natter.outbox.${S.me.id}`, JSON.stringify(list));
}
function outboxFor(chatId) {
  return S.me ? outboxAll().filter((p) => p.chat_id === chatId) : [];
}
function saveOutboxItem(p) {
  outboxSave(outboxAll().map((x) => (x.client_msg_id === p.client_msg_id ? p : x)));
}
function dropOutbox(cmid) {
  outboxSave(outboxAll().filter((x) => x.client_msg_id !== cmid));
}

function mentionsIn(chatId, text) {
  const v = view(chatId);
  const ids = [];
  for (const m of text.matchAll(/@([A-Za-z0-9_.-]+)/g)) {
    const u = v.members.find((mm) => mm.user.username.toLowerCase() === m[1].toLowerCase());
    if (u && !ids.includes(u.user.id)) ids.push(u.user.id);
  }
  return ids;
}

async function submitComposer() {
  const t = $("#composer");
  const text = t.value.trim();
  if (!text || !S.openId) return;
  const max = S.limits ? S.limits.message.max_chars : 100000;
  if ([...text].length > max) return toast(`A message has at most ${max} characters.`);
  const chatId = S.openId;
  if (S.editing) {
    const { seq } = S.editing;
    S.editing = null;
    sendTyping(chatId, false);
    t.value = "";
    renderComposerBar();
    try {
      const m = await api.patch(`/v1/chats/${chatId}/messages/${seq}`, { text });
      view(chatId).msgs.set(m.seq, { ...view(chatId).msgs.get(m.seq), ...m });
      renderMessages(false);
    } catch (e) {
      fail(e);
    }
    return;
  }
  const p = { chat_id: chatId, client_msg_id: uuid(), text, mentions: mentionsIn(chatId, text), created: Date.now() };
  if (S.replyTo) p.reply_to_seq = S.replyTo.seq;
  S.replyTo = null;
  t.value = "";
  autoGrow(t);
  renderComposerBar();
  queueSend(p);
  sendTyping(chatId, false);
}

function queueSend(p) {
  outboxSave([...outboxAll(), p]);
  renderMessages(true);
  flushOutbox();
}

// Sends every outbox message, oldest first, retrying with backoff while the
// network or the server fails; a message the server refuses for good is
// marked failed with the reason. One flusher per tab at a time.
let flushing = false;
async function flushOutbox() {
  if (flushing || !S.me) return;
  flushing = true;
  let delay = 500;
  try {
    for (let guard = 0; guard < 100000 && S.me; guard++) {
      const next = outboxAll().find((p) => !p.failed);
      if (!next) break;
      const body = { client_msg_id: next.client_msg_id, text: next.text };
      if (next.reply_to_seq) body.reply_to_seq = next.reply_to_seq;
      if (next.mentions && next.mentions.length) body.mentions = next.mentions;
      if (next.attachment_ids) body.attachment_ids = next.attachment_ids;
      try {
        const m = await withLockIf(`natter-send-${next.client_msg_id}`, () => api.post(`/v1/chats/${next.chat_id}/messages`, body));
        dropOutbox(next.client_msg_id);
        if (m) applyMessage(m);
        delay = 500;
        if (!S.online) setConn(true);
      } catch (e) {
        if (!(e instanceof ApiError)) throw e;
        const transient = e.status === 0 || e.status === 429 || e.status >= 500 || e.status === 408;
        if (!transient) {
          next.failed = describeError(e, S.limits);
          saveOutboxItem(next);
          if (S.openId === next.chat_id) renderMessages(false);
          continue;
        }
        if (e.status === 0) setConn(false, "offline — messages will be sent when the connection is back");
        const wait = e.retryAfter ? e.retryAfter * 1000 : delay;
        delay = Math.min(delay * 2, 10000);
        await new Promise((resolve) => {
          const t = setTimeout(resolve, wait);
          wakeSend = () => {
            clearTimeout(t);
            resolve();
          };
        });
        wakeSend = () => {};
      }
    }
  } finally {
    flushing = false;
  }
}

async function withLockIf(name, fn) {
  return navigator.locks ? navigator.locks.request(name, fn) : fn();
}

// ends the outbox's back-off wait at once (the browser says it is online again)
let wakeSend = () => {};
window.addEventListener("online", () => {
  wakeSend();
  flushOutbox();
});

// ---------------------------------------------------------------- attachments

async function uploadAndSend(chatId, f) {
  const lim = S.limits && S.limits.attachments;
  if (lim && f.size > lim.max_bytes) return toast(`“${f.name}” is too large (at most ${fmtBytes(lim.max_bytes)}).`);
  const box = $("#messages");
  const prog = h("progress", { max: 100, value: 0, "data-testid": "upload-progress" });
  const row = h("div", { class: "msg mine pending upload" }, h("div", { text: `Uploading ${f.name} (${fmtBytes(f.size)})` }), prog);
  box?.append(row);
  if (box) box.scrollTop = box.scrollHeight;
  try {
    const digest = await sha256(f);
    const type = f.type || "application/octet-stream";
    const r = await api.post(`/v1/chats/${chatId}/attachments`, { filename: f.name.slice(0, 200), content_type: type, size: f.size, sha256: digest.hex });
    await new Promise((resolve, reject) => {
      const x = new XMLHttpRequest();
      x.open(r.upload.method, r.upload.url);
      for (const [k, v] of Object.entries(r.upload.headers)) if (k.toLowerCase() !== "content-length") x.setRequestHeader(k, v);
      x.upload.onprogress = (ev) => {
        if (ev.lengthComputable) prog.value = Math.round((100 * ev.loaded) / ev.total);
      };
      x.onload = () => (x.status >= 200 && x.status < 300 ? resolve() : reject(new ApiError(x.status, safeJson(x.responseText), null)));
      x.onerror = () => reject(new ApiError(0, { title: "Upload failed", detail: "the store could not be reached" }, null));
      x.send(f);
    });
    prog.value = 100;
    await api.post(`/v1/attachments/${r.attachment.id}/complete`);
    row.remove();
    queueSend({ chat_id: chatId, client_msg_id: uuid(), text: f.name, attachment_ids: [r.attachment.id], created: Date.now() });
  } catch (e) {
    row.remove();
    fail(e);
  }
}

function safeJson(t) {
  try {
    return JSON.parse(t);
  } catch {
    return null;
  }
}

const downloads = new Map(); // attachment id -> {url, until}
async function downloadUrl(id) {
  const d = downloads.get(id);
  if (d && d.until > Date.now()) return d.url;
  const r = await api.get(`/v1/attachments/${id}`);
  downloads.set(id, { url: r.download.url, until: new Date(r.download.expires_at).getTime() - 30000 });
  return r.download.url;
}

function renderAttachment(a) {
  const el = h("div", { class: "attachment", "data-testid": "attachment" });
  const link = h("a", {
    href: "#",
    "data-testid": "download",
    onclick: async (ev) => {
      ev.preventDefault();
      try {
        location.href = await downloadUrl(a.id);
      } catch (e) {
        fail(e);
      }
    },
    text: `⬇ ${a.filename} (${fmtBytes(a.size)})`,
  });
  if (a.content_type.startsWith("image/")) {
    const img = h("img", { alt: a.filename, class: "preview-img", "data-testid": "image-preview", onload: keepAtEnd });
    downloadUrl(a.id).then((u) => (img.src = u)).catch(() => img.remove());
    el.append(img);
  }
  el.append(link);
  return el;
}

// ---------------------------------------------------------------- reactions, reads, typing

async function toggleReaction(chatId, m, emoji) {
  const mine = (m.reactions || []).find((r) => r.emoji === emoji && r.me);
  const path = `/v1/chats/${chatId}/messages/${m.seq}/reactions/${encodeURIComponent(emoji)}`;
  try {
    const r = mine ? await api.del(path) : await api.put(path);
    const v = view(chatId);
    const cur = v.msgs.get(m.seq);
    if (cur && r) cur.reactions = r.reactions;
    renderMessages(false);
  } catch (e) {
    fail(e);
  }
}

let readTimer = null;
function markRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(async () => {
    const c = S.chats.get(S.openId);
    if (!c || document.hidden || !S.stick) return;
    const v = view(c.id);
    const last = Math.max(0, ...v.msgs.keys());
    if (!last || last <= c.last_read_seq) return;
    try {
      const r = await api.post(`/v1/chats/${c.id}/read`, { seq: last });
      Object.assign(c, { last_read_seq: r.last_read_seq, unread_count: r.unread_count, unread_mentions: r.unread_mentions, has_unread: r.unread_count > 0 });
      renderChatList();
    } catch (e) {
      fail(e);
    }
  }, 300);
}
document.addEventListener("visibilitychange", () => !document.hidden && markRead());
window.addEventListener("focus", markRead);

let typingSentAt = 0;
let typingStop = null;
function typingInput() {
  const id = S.openId;
  if (!id) return;
  if (Date.now() - typingSentAt > 3000) sendTyping(id, true);
  clearTimeout(typingStop);
  typingStop = setTimeout(() => sendTyping(id, false), 5000);
}
function sendTyping(id, on) {
  if (on) typingSentAt = Date.now();
  else {
    if (!typingSentAt) return;
    typingSentAt = 0;
    clearTimeout(typingStop);
  }
  api.post(`/v1/chats/${id}/typing`, { typing: on }).catch((e) => {
    if (e.code !== "rate_limited") console.warn(e);
  });
}

function tickTyping() {
  let changed = false;
  for (const [cid, m] of S.typing)
    for (const [uid, until] of m)
      if (until < Date.now()) {
        m.delete(uid);
        changed = changed || cid === S.openId;
      }
  if (changed) renderTyping();
}

function renderTyping() {
  const el = $("#typing");
  if (!el) return;
  const m = S.typing.get(S.openId);
  const names = m ? [...m.keys()].map(userName) : [];
  el.textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

async function refreshPresence() {
  if (!S.me) return;
  const ids = new Set();
  for (const c of S.chats.values()) if (c.other_user) ids.add(c.other_user.id);
  const v = S.openId && S.views.get(S.openId);
  if (v) for (const m of v.members) if (m.user.id !== S.me.id) ids.add(m.user.id);
  const list = [...ids].slice(0, 200);
  if (!list.length) return;
  try {
    const r = await api.get(`/v1/presence?user_ids=${list.join(",")}`);
    for (const p of r.presence) S.presence.set(p.user_id, p);
    renderChatList();
    renderHeader();
  } catch (e) {
    console.warn(e);
  }
}

// ---------------------------------------------------------------- receiving

function cursorKey() {
  const s = loadSession();
  return s ? `natter.cursor.${s.device_id}` : null;
}

// Only one tab per profile polls (the holder of the lock), so two tabs of one
// device never cancel each other's poll; the others get its events over the
// BroadcastChannel. Without Web Locks every tab polls on its own.
function startPolling(signal) {
  const s = loadSession();
  if (!s) return;
  const run = () => pollLoop(signal);
  if (navigator.locks) navigator.locks.request(`natter-poll-${s.device_id}`, { signal }, run).catch(() => {});
  else run();
}

// ends the poll's back-off wait at once (the browser says it is online again)
let wakePoll = () => {};
window.addEventListener("online", () => wakePoll());

async function pollLoop(signal) {
  let backoff = 1000;
  for (let guard = 0; !signal.aborted && guard < 10000000; guard++) {
    const key = cursorKey();
    if (!key) return;
    let since = localStorage.getItem(key);
    try {
      if (since === null) {
        const r = await api.get("/v1/events", { signal });
        localStorage.setItem(key, String(r.next));
        continue;
      }
      const r = await api.get(`/v1/events?since=${since}&timeout=25`, { signal });
      if (!S.online) setConn(true);
      backoff = 1000;
      if (r.events.length) {
        r.events.forEach(applyEvent);
        channel?.postMessage({ kind: "events", events: r.events });
      }
      localStorage.setItem(key, String(r.next));
    } catch (e) {
      if (signal.aborted || (e && e.name === "AbortError")) return;
      if (e instanceof ApiError && e.code === "cursor_expired") {
        localStorage.removeItem(key);
        channel?.postMessage({ kind: "reset" });
        await resync();
        continue;
      }
      if (e instanceof ApiError && e.status === 401) return;
      setConn(false, e.status === 0 ? "offline — reconnecting…" : "reconnecting…");
      const wait = e.retryAfter ? e.retryAfter * 1000 : backoff;
      backoff = Math.min(backoff * 2, 30000);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, wait + Math.random() * 300);
        wakePoll = () => {
          clearTimeout(t);
          resolve();
        };
      });
      wakePoll = () => {};
    }
  }
}

// 410 cursor_expired: what the events would have told us is reloaded by REST
async function resync() {
  S.views.clear();
  await loadChats(true).catch(fail);
  if (S.openId) openChat(S.openId);
}

function applyMessage(m) {
  const c = S.chats.get(m.chat_id);
  const v = S.views.get(m.chat_id);
  if (v && v.loaded) {
    const old = v.msgs.get(m.seq);
    v.msgs.set(m.seq, old && old.reactions ? { ...m, reactions: old.reactions } : m);
  }
  if (m.sender_id === S.me.id && m.client_msg_id) dropOutbox(m.client_msg_id);
  if (!c) {
    api.get(`/v1/chats/${m.chat_id}`).then(upsertChat).catch(() => {});
    return;
  }
  if (!c.last_message || c.last_message.seq <= m.seq) {
    const fresh = !c.last_message || c.last_message.seq < m.seq;
    c.last_message = m;
    c.last_message_at = m.created_at;
    c.last_seq = Math.max(c.last_seq || 0, m.seq);
    if (fresh && m.sender_id !== S.me.id && m.kind === "text" && m.seq > c.last_read_seq) {
      c.unread_count = (c.unread_count || 0) + 1;
      if ((m.mentions || []).includes(S.me.id)) c.unread_mentions = (c.unread_mentions || 0) + 1;
      c.has_unread = true;
    }
    if (m.sender_id === S.me.id) {
      c.last_read_seq = Math.max(c.last_read_seq, m.seq);
      c.unread_count = 0;
      c.unread_mentions = 0;
      c.has_unread = false;
    }
  }
  renderChatList();
  if (S.openId === m.chat_id) {
    renderMessages(false);
    if (m.sender_id !== S.me.id) markRead();
  }
}

function applyEvent(ev) {
  const d = ev.data || {};
  const cid = ev.chat_id ?? d.chat_id;
  switch (ev.type) {
    case "message":
      if (d.message.sender_id) loadUsers([d.message.sender_id]).then(() => applyMessage(d.message));
      else applyMessage(d.message);
      if (S.typing.get(cid)?.delete(d.message.sender_id)) renderTyping();
      break;
    case "edit": {
      const v = S.views.get(cid);
      const old = v && v.msgs.get(d.message.seq);
      if (old) {
        const reactions = (d.message.reactions || []).map((r) => ({ ...r, me: !!(old.reactions || []).find((o) => o.emoji === r.emoji && o.me) }));
        v.msgs.set(d.message.seq, { ...old, ...d.message, reactions });
      }
      const c = S.chats.get(cid);
      if (c && c.last_message && c.last_message.seq === d.message.seq) c.last_message = { ...c.last_message, ...d.message };
      refreshView(cid);
      break;
    }
    case "delete": {
      const v = S.views.get(cid);
      const old = v && v.msgs.get(d.seq);
      if (old) v.msgs.set(d.seq, { ...old, text: null, mentions: [], attachments: [], attachment_ids: [], reactions: [], deleted_at: ev.created_at });
      const c = S.chats.get(cid);
      if (c && c.last_message && c.last_message.seq === d.seq) c.last_message = { ...c.last_message, text: null, deleted_at: ev.created_at };
      if (c && d.seq > c.last_read_seq) api.get(`/v1/chats/${cid}`).then(upsertChat).catch(() => {});
      refreshView(cid);
      break;
    }
    case "reaction": {
      const v = S.views.get(cid);
      const old = v && v.msgs.get(d.seq);
      if (old) {
        const mineBefore = new Set((old.reactions || []).filter((r) => r.me).map((r) => r.emoji));
        if (d.user_id === S.me.id) d.action === "added" ? mineBefore.add(d.emoji) : mineBefore.delete(d.emoji);
        old.reactions = (d.reactions || []).map((r) => ({ ...r, me: mineBefore.has(r.emoji) }));
      }
      refreshView(cid);
      break;
    }
    case "receipt": {
      const v = S.views.get(cid);
      if (v) {
        const upd = d.members && d.members.length ? d.members : [{ user_id: d.user_id, seq: d.seq }];
        for (const u of upd) {
          const r = v.receipts.get(u.user_id) || { user_id: u.user_id, last_read_seq: 0, last_delivered_seq: 0 };
          if (d.kind === "read") r.last_read_seq = Math.max(r.last_read_seq, u.seq);
          r.last_delivered_seq = Math.max(r.last_delivered_seq, u.seq);
          v.receipts.set(u.user_id, r);
        }
      }
      if (d.user_id === S.me.id && d.kind === "read") {
        // my other device read it
        api.get(`/v1/chats/${cid}`).then(upsertChat).catch(() => {});
      }
      refreshView(cid);
      break;
    }
    case "membership":
    case "rename": {
      if (d.action === "removed" && (d.user_ids || []).includes(S.me.id)) {
        S.chats.delete(cid);
        S.views.delete(cid);
        if (S.openId === cid) S.openId = null;
        renderChatList();
        renderChatPane();
        toast("You were removed from a group.", "info");
        break;
      }
      if (d.action === "left" && (d.user_ids || [d.actor_id]).includes(S.me.id)) {
        S.chats.delete(cid);
        if (S.openId === cid) S.openId = null;
        renderChatList();
        renderChatPane();
        break;
      }
      api
        .get(`/v1/chats/${cid}`)
        .then((c) => {
          upsertChat(c);
          if (S.openId === cid) loadMembers(cid).then(() => renderMessages(false));
        })
        .catch(() => {});
      break;
    }
    case "typing": {
      if (d.user_id === S.me.id) break;
      let m = S.typing.get(d.chat_id);
      if (!m) S.typing.set(d.chat_id, (m = new Map()));
      if (d.typing) m.set(d.user_id, Date.now() + TYPING_TTL);
      else m.delete(d.user_id);
      if (d.chat_id === S.openId) renderTyping();
      break;
    }
    case "presence":
      S.presence.set(d.user_id, { user_id: d.user_id, online: d.online, last_seen_at: d.last_seen_at });
      renderChatList();
      renderHeader();
      break;
    default:
      break;
  }
}

function refreshView(cid) {
  renderChatList();
  if (S.openId === cid) renderMessages(false);
}

// ---------------------------------------------------------------- dialogs

function dialog(title, ...body) {
  const d = h("dialog", { class: "dialog", "aria-label": title }, h("form", { method: "dialog", class: "dialog-head" }, h("h2", { text: title }), h("button", { class: "icon", "aria-label": "Close", text: "✕" })), ...body);
  d.addEventListener("close", () => d.remove());
  document.body.append(d);
  d.showModal();
  return d;
}

async function idsOf(usernames) {
  const ids = [];
  for (const n of usernames) {
    const u = await api.get(`/v1/users?username=${encodeURIComponent(n)}`);
    S.users.set(u.id, u);
    ids.push(u.id);
  }
  return ids;
}

function splitNames(s) {
  return s.split(/[\s,]+/).map((x) => x.replace(/^@/, "")).filter(Boolean);
}

function newGroupDialog() {
  const title = h("input", { name: "title", required: true, maxlength: 200, "data-testid": "group-title" });
  const members = h("input", { name: "members", placeholder: "alice, bob", "data-testid": "group-members" });
  const d = dialog(
    "New group",
    h(
      "form",
      {
        class: "stack",
        onsubmit: async (ev) => {
          ev.preventDefault();
          try {
            const ids = await idsOf(splitNames(members.value));
            const c = await api.post("/v1/chats", { kind: "group", title: title.value, member_ids: ids });
            upsertChat(c);
            d.close();
            openChat(c.id);
          } catch (e) {
            toast(e.code === "user_not_found" ? "One of those usernames does not exist." : describeError(e, S.limits));
          }
        },
      },
      h("label", {}, "Title", title),
      h("label", {}, "Members (usernames)", members),
      h("button", { type: "submit", class: "primary", "data-testid": "create-group", text: "Create group" }),
    ),
  );
}

async function chatInfoDialog() {
  const c = S.chats.get(S.openId);
  if (!c) return;
  await loadMembers(c.id).catch(fail);
  const v = view(c.id);
  const admin = c.my_role === "owner" || c.my_role === "admin";
  const list = h(
    "ul",
    { class: "members" },
    v.members.map((m) => {
      const p = S.presence.get(m.user.id);
      return h(
        "li",
        {},
        h("span", { class: `dot${p && p.online ? " on" : ""}` }),
        h("span", { class: "grow", text: `${m.user.display_name} (@${m.user.username})${m.user.id === S.me.id ? " — you" : ""}` }),
        c.kind === "group" && admin && m.user.id !== S.me.id
          ? h(
              "select",
              { "aria-label": `Role of ${m.user.username}`, onchange: (ev) => api.patch(`/v1/chats/${c.id}/members/${m.user.id}`, { role: ev.target.value }).then(() => loadMembers(c.id)).catch(fail) },
              ["member", "admin", "owner"].map((r) => h("option", { value: r, selected: r === m.role, text: r })),
            )
          : h("span", { class: "role", text: c.kind === "group" ? m.role : p && p.online ? "online" : `last seen ${ago(p && p.last_seen_at)}` }),
        c.kind === "group" && admin && m.user.id !== S.me.id
          ? h("button", { class: "link danger", onclick: () => api.del(`/v1/chats/${c.id}/members/${m.user.id}`).then(() => { d.close(); }).catch(fail), text: "Remove" })
          : null,
      );
    }),
  );
  const body = [list];
  if (c.kind === "group") {
    if (admin) {
      const t = h("input", { value: c.title, maxlength: 200, "aria-label": "Group title" });
      body.push(h("form", { class: "row", onsubmit: (ev) => { ev.preventDefault(); api.patch(`/v1/chats/${c.id}`, { title: t.value }).then((x) => { upsertChat(x); renderHeader(); d.close(); }).catch(fail); } }, t, h("button", { text: "Rename" })));
      const add = h("input", { placeholder: "usernames to add", "aria-label": "Usernames to add" });
      body.push(h("form", { class: "row", onsubmit: async (ev) => { ev.preventDefault(); try { await api.post(`/v1/chats/${c.id}/members`, { user_ids: await idsOf(splitNames(add.value)) }); d.close(); } catch (e) { fail(e); } } }, add, h("button", { text: "Add" })));
    }
    body.push(h("button", { class: "danger", onclick: () => { if (confirm("Leave this group?")) api.del(`/v1/chats/${c.id}/members/${S.me.id}`).then(() => { S.chats.delete(c.id); S.openId = null; renderChatList(); renderChatPane(); d.close(); }).catch(fail); }, text: "Leave group" }));
  }
  body.push(h("button", { onclick: () => api[c.muted ? "del" : "put"](`/v1/chats/${c.id}/mute`).then((x) => { upsertChat(x); d.close(); }).catch(fail), text: c.muted ? "Unmute" : "Mute notifications" }));
  const d = dialog(chatTitle(c), ...body);
}

async function settingsDialog() {
  const s = loadSession();
  const devices = h("ul", { class: "members", "data-testid": "devices" });
  const load = async () => {
    const r = await api.get("/v1/devices");
    devices.replaceChildren(
      ...r.devices.map((dv) =>
        h(
          "li",
          { "data-device-id": dv.id },
          h("span", { class: "grow", text: `${dv.name} · ${dv.platform} · active ${ago(dv.last_active_at)}${dv.current ? " — this browser" : ""}` }),
          dv.current ? null : h("button", { class: "link danger", onclick: () => api.del(`/v1/devices/${dv.id}`).then(load).catch(fail), text: "Revoke" }),
        ),
      ),
    );
  };
  load().catch(fail);
  const name = h("input", { value: S.me.display_name, maxlength: 64, "aria-label": "Display name" });
  dialog(
    "Settings",
    h("p", { text: `Signed in as @${S.me.username} (device ${s ? s.device_id : "?"})` }),
    h("form", { class: "row", onsubmit: (ev) => { ev.preventDefault(); api.patch("/v1/users/me", { display_name: name.value }).then((u) => { S.me = u; S.users.set(u.id, u); renderMe(); toast("Saved.", "info"); }).catch(fail); } }, name, h("button", { text: "Save name" })),
    h("h3", { text: "Devices" }),
    devices,
    h("p", {}, h("a", { href: "docs", target: "_blank", text: "API reference" })),
    h("button", { class: "danger", "data-testid": "logout", onclick: () => { api.logout().catch(() => {}); channel?.postMessage({ kind: "signout" }); }, text: "Sign out" }),
  );
}

boot();
