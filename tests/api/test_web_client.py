"""The web client (web/, served by natter-api at `/`) driven in headless Chromium through
WebDriver, as people would use it: two users in two browser profiles register, chat, see
each other's messages, receipts and typing without a reload; a second tab of one profile;
a group of three; an image attachment; a send while the network is down; a reload; /docs.

The tests of this module build on each other (one server, the same users). Screenshots of
the main screens go to <NATTER_BIN_DIR>/screenshots/ (build/ or build-asan/), which
`make test` keeps; docs/img/web-client.png in the README is one of them.
"""
import base64
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from natterlib import TEST_PASSWORD, Client, login, psql, psql_int, register, unique_username

WAIT = 90  # seconds: generous, the suite runs twice in parallel on a loaded machine


def shots_dir() -> Path:
    d = Path(os.environ.get("NATTER_BIN_DIR", "build")) / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


def shot(driver, name):
    driver.save_screenshot(str(shots_dir() / f"{name}.png"))


def new_browser(width=1200, height=800):
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions",
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows", "--no-first-run"):
        opts.add_argument(arg)
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    drv.set_page_load_timeout(WAIT)
    return drv


def wait(driver, cond, what, timeout=WAIT):
    def safe(d):
        try:
            return cond(d)
        except StaleElementReferenceException:
            return False
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(safe, message=what)


def find(driver, css):
    return wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, css), f"element {css}")


def texts(driver, css):
    # in the page, at once: a re-render between two WebDriver calls would make them stale
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css)


def message_with(driver, text):
    """The confirmed (not pending) message element whose text is `text`, or None."""
    for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid=message][data-seq]"):
        body = e.find_elements(By.CSS_SELECTOR, "[data-testid=text]")
        if body and body[0].text == text:
            return e
    return None


def wait_message(driver, text):
    return wait(driver, lambda d: message_with(d, text), f"message {text!r} shown")


def send(driver, text):
    box = find(driver, "[data-testid=composer]")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def ui_register_and_login(driver, base, username, display):
    driver.get(base + "/")
    form = find(driver, "[data-testid=register-form]")
    form.find_element(By.NAME, "username").send_keys(username)
    form.find_element(By.NAME, "display_name").send_keys(display)
    form.find_element(By.NAME, "password").send_keys(TEST_PASSWORD)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    find(driver, "#chatlist")
    wait(driver, lambda d: d.execute_script("return !!document.querySelector('#me').textContent"), "signed in")


def ui_login(driver, base, username):
    driver.get(base + "/")
    form = find(driver, "[data-testid=login-form]")
    form.find_element(By.NAME, "username").send_keys(username)
    form.find_element(By.NAME, "password").send_keys(TEST_PASSWORD)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    find(driver, "#chatlist")
    wait(driver, lambda d: d.execute_script("return !!document.querySelector('#me').textContent"), "signed in")


def click(driver, css, what=None):
    """Finds and clicks in one step, again if a re-render replaced the element meanwhile."""
    def go(d):
        d.find_element(By.CSS_SELECTOR, css).click()
        return True
    wait(driver, go, what or f"click {css}")


def open_chat(driver, chat_id):
    click(driver, f"[data-testid=chat-item][data-chat-id='{chat_id}']", f"open chat {chat_id}")
    wait(driver, lambda d: d.execute_script("return location.hash") == f"#chat-{chat_id}"
         and d.find_element(By.ID, "chat-title").text, "chat header")


def start_direct(driver, username):
    box = find(driver, "[data-testid=start-direct]")
    box.send_keys(username)
    box.send_keys(Keys.ENTER)
    return wait(driver, lambda d: d.execute_script(
        "return Number(location.hash.replace('#chat-', '')) || null"), "the new chat opened")


def receipt_state(driver, text):
    return driver.execute_script("""
        for (const m of document.querySelectorAll('[data-testid=message][data-seq]')) {
          const t = m.querySelector('[data-testid=text]');
          if (t && t.textContent === arguments[0]) {
            const r = m.querySelector('[data-testid=receipt]');
            return r ? r.dataset.state : null;
          }
        }
        return null;""", text)


def png_bytes(width=8, height=8):
    """A small valid RGB PNG (red), written without any imaging library."""
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))

    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class World:
    """What the tests of this module share: the server, the browsers, the users."""


@pytest.fixture(scope="module")
def world(start_api_module, spec):
    w = World()
    # access tokens expire during the module: the page must refresh them unnoticed
    w.srv = start_api_module(NATTER_ACCESS_TOKEN_TTL="30")
    w.base = w.srv.base_url
    w.api = Client(w.base, spec)
    w.browsers = []
    yield w
    for b in w.browsers:
        try:
            b.quit()
        except Exception:  # noqa: BLE001 — a browser that died is already gone
            pass
    w.api.close()


def browser(w, **kw):
    b = new_browser(**kw)
    w.browsers.append(b)
    return b


def api_messages(w, token, chat_id):
    r = w.api.get(f"/v1/chats/{chat_id}/messages?limit=100", token=token)
    assert r.status_code == 200, r.text
    return r.json()["messages"]


def test_two_users_register_and_chat(world):
    """Alice and Bob register in two browser profiles, Alice starts a direct chat by
    username, and each one's messages appear on the other side without a reload; Bob's
    list shows the chat bold with its unread count before he opens it."""
    w = world
    w.alice_name, w.bob_name = unique_username("alice"), unique_username("bob")
    w.alice = browser(w)
    w.bob = browser(w)
    w.alice.get(w.base + "/")
    find(w.alice, "[data-testid=login-form]")
    shot(w.alice, "01-login")
    ui_register_and_login(w.alice, w.base, w.alice_name, "Alice")
    ui_register_and_login(w.bob, w.base, w.bob_name, "Bob")
    w.chat = start_direct(w.alice, w.bob_name)
    send(w.alice, "hello bob")
    assert wait_message(w.alice, "hello bob")
    item_css = f"[data-testid=chat-item][data-chat-id='{w.chat}']"
    wait(w.bob, lambda d: d.find_element(By.CSS_SELECTOR, item_css), "chat appears in Bob's list")
    wait(w.bob, lambda d: "unread" in d.find_element(By.CSS_SELECTOR, item_css).get_attribute("class")
         and d.find_element(By.CSS_SELECTOR, item_css + " [data-testid=unread]").text == "1",
         "Bob's chat is bold with 1 unread")
    shot(w.bob, "02-chat-list-unread")
    open_chat(w.bob, w.chat)
    assert wait_message(w.bob, "hello bob")
    send(w.bob, "hi alice")
    assert wait_message(w.alice, "hi alice")
    send(w.alice, "how are you?")
    assert wait_message(w.bob, "how are you?")
    wait(w.alice, lambda d: receipt_state(d, "how are you?") == "read", "Alice sees Bob read it")
    shot(w.alice, "03-direct-chat")


def test_second_tab_sees_read_state_move(world):
    """A second tab of Alice's profile (same device) shows her new message as not yet read
    while Bob is away, and as read once Bob opens the chat — without a reload."""
    w = world
    w.bob.get("about:blank")
    send(w.alice, "are you there?")
    wait_message(w.alice, "are you there?")
    first = w.alice.current_window_handle
    w.alice.switch_to.new_window("tab")
    w.alice.get(f"{w.base}/#chat-{w.chat}")
    wait_message(w.alice, "are you there?")
    assert receipt_state(w.alice, "are you there?") in ("sent", "delivered")
    w.bob.get(w.base + "/")
    open_chat(w.bob, w.chat)
    wait_message(w.bob, "are you there?")
    wait(w.alice, lambda d: receipt_state(d, "are you there?") == "read", "the second tab sees 'read'")
    w.alice.close()
    w.alice.switch_to.window(first)
    wait(w.alice, lambda d: receipt_state(d, "are you there?") == "read", "the first tab too")


def test_send_while_offline_goes_out_once(world):
    """With the network cut in Alice's page, a message shows at once as pending; when the
    network is back it is sent (same client_msg_id) and Bob and the API see it exactly once."""
    w = world
    w.alice.execute_cdp_cmd("Network.enable", {})
    w.alice.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    try:
        send(w.alice, "sent while offline")
        pending = wait(w.alice, lambda d: [e for e in d.find_elements(
            By.CSS_SELECTOR, "[data-testid=message][data-pending=true]") if "sent while offline" in e.text],
            "pending message shown")
        assert pending
        shot(w.alice, "04-offline-pending")
        # it stays pending while offline (retries fail)
        assert message_with(w.alice, "sent while offline") is None
    finally:
        w.alice.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    wait_message(w.alice, "sent while offline")
    wait_message(w.bob, "sent while offline")
    wait(w.alice, lambda d: not d.find_elements(By.CSS_SELECTOR, "[data-pending=true]"), "no pending left")
    assert texts(w.bob, "[data-testid=message] [data-testid=text]").count("sent while offline") == 1
    tok = login(w.api, w.bob_name)["access_token"]
    w.bob_token = tok
    same = [m for m in api_messages(w, tok, w.chat) if m["text"] == "sent while offline"]
    assert len(same) == 1


def test_reload_keeps_conversation_and_cursor(world):
    """A reload keeps the open conversation (its URL) and the device's event cursor: the
    poll resumes from the stored cursor, not from the head, and new messages still arrive."""
    w = world
    before = int(w.alice.execute_script(
        "const s = JSON.parse(localStorage.getItem('natter.session'));"
        "return localStorage.getItem('natter.cursor.' + s.device_id)"))
    assert before > 0
    w.alice.refresh()
    wait_message(w.alice, "sent while offline")
    after = int(w.alice.execute_script(
        "const s = JSON.parse(localStorage.getItem('natter.session'));"
        "return localStorage.getItem('natter.cursor.' + s.device_id)"))
    assert after >= before
    send(w.bob, "after your reload")
    wait_message(w.alice, "after your reload")
    assert texts(w.alice, "[data-testid=message] [data-testid=text]").count("after your reload") == 1


def test_cursor_expired_reloads_state(world):
    """When the device's cursor is older than the retained inbox (410 cursor_expired), the
    page reloads its state by REST, restarts from the head and keeps receiving."""
    w = world
    me = w.alice.execute_script("return JSON.parse(localStorage.getItem('natter.session')).user.id")
    head = psql_int("SELECT coalesce(max(seq), 0) FROM inbox WHERE user_id = $1", me)
    assert head > 3
    psql("DELETE FROM inbox WHERE user_id = $1 AND seq < $2", me, head)
    # in one script, so the running poll cannot store its cursor in between
    w.alice.execute_script(
        "const s = JSON.parse(localStorage.getItem('natter.session'));"
        "localStorage.setItem('natter.cursor.' + s.device_id, '1'); location.reload()")
    wait_message(w.alice, "after your reload")
    wait(w.alice, lambda d: int(d.execute_script(
        "const s = JSON.parse(localStorage.getItem('natter.session'));"
        "return localStorage.getItem('natter.cursor.' + s.device_id) || '0'")) >= head,
         "the cursor restarted from the head")
    send(w.bob, "after the cursor expired")
    wait_message(w.alice, "after the cursor expired")


def test_group_of_three_typing_and_receipts(world):
    """Alice creates a group with Bob and Carol; typing by Bob (browser) and Carol (API)
    shows in Alice's page, and her message goes from sent to 'read by 2' as both read it."""
    w = world
    carol_name = unique_username("carol")
    register(w.api, carol_name, display_name="Carol")
    carol = login(w.api, carol_name)["access_token"]
    click(w.alice, "button[aria-label='New group']")
    find(w.alice, "[data-testid=group-title]").send_keys("Weekend plans")
    find(w.alice, "[data-testid=group-members]").send_keys(f"{w.bob_name}, {carol_name}")
    click(w.alice, "[data-testid=create-group]")
    wait(w.alice, lambda d: d.find_element(By.ID, "chat-title").text == "Weekend plans", "group open")
    group = w.alice.execute_script("return Number(location.hash.replace('#chat-', ''))")
    open_chat(w.bob, group)
    find(w.bob, "[data-testid=composer]").send_keys("typing something")
    wait(w.alice, lambda d: "Bob is typing" in d.find_element(By.CSS_SELECTOR, "[data-testid=typing]").text,
         "Bob's typing shown")
    r = w.api.post(f"/v1/chats/{group}/typing", json={"typing": True}, token=carol)
    assert r.status_code == 204
    wait(w.alice, lambda d: "Carol" in d.find_element(By.CSS_SELECTOR, "[data-testid=typing]").text,
         "Carol's typing shown")
    shot(w.alice, "05-group-typing")
    find(w.bob, "[data-testid=composer]").clear()
    send(w.alice, "saturday?")
    wait_message(w.alice, "saturday?")
    wait(w.alice, lambda d: "read by 1" in message_with(d, "saturday?").text, "read by Bob")
    seq = int(message_with(w.alice, "saturday?").get_attribute("data-seq"))
    r = w.api.post(f"/v1/chats/{group}/read", json={"seq": seq}, token=carol)
    assert r.status_code == 200
    wait(w.alice, lambda d: "read by 2" in message_with(d, "saturday?").text, "read by Bob and Carol")
    shot(w.alice, "06-group-read-by-2")


def test_image_attachment_uploaded_and_shown(world, tmp_path):
    """Alice picks an image: it is uploaded through the pre-signed URL (with its SHA-256),
    sent, and shown as a preview on Bob's side, with a download link."""
    w = world
    open_chat(w.alice, w.chat)
    open_chat(w.bob, w.chat)
    img = tmp_path / "red-square.png"
    img.write_bytes(png_bytes(160, 96))
    find(w.alice, "[data-testid=file-input]").send_keys(str(img))
    wait_message(w.alice, "red-square.png")
    wait_message(w.bob, "red-square.png")
    # (looked up afresh each time: a re-render replaces the element)
    wait(w.bob, lambda d: d.execute_script(
        "const i = arguments[0].querySelector('[data-testid=image-preview]');"
        "return i && i.complete && i.naturalWidth === 160", message_with(d, "red-square.png")),
         "the preview image loaded")
    link = message_with(w.bob, "red-square.png").find_element(By.CSS_SELECTOR, "[data-testid=download]")
    assert link.text.startswith("⬇ red-square.png")
    shot(w.bob, "07-image-attachment")
    shot(w.alice, "web-client")


def act(driver, text, testid):
    """Clicks the action `testid` (or aria-label) of the message showing `text` (the
    actions show on hover or focus; clicked by script so a hover is not needed)."""
    def go(d):
        m = message_with(d, text)
        if not m:
            return False
        b = m.find_elements(By.CSS_SELECTOR, f"[data-testid='{testid}'], [aria-label='{testid}']")
        if not b:
            return False
        d.execute_script("arguments[0].click()", b[0])
        return True
    wait(driver, go, f"action {testid} on {text!r}")


def test_reply_mention_edit_react_delete(world):
    """Bob replies to a message, mentions Alice, edits and deletes; Alice reacts. Each
    change shows on the other side without a reload; a delete leaves a tombstone."""
    w = world
    act(w.bob, "hello bob", "reply")
    send(w.bob, "replying here")
    m = wait_message(w.alice, "replying here")
    wait(w.alice, lambda d: "hello bob" in message_with(d, "replying here").find_element(
        By.CSS_SELECTOR, "[data-testid=quote]").text, "the reply quotes the message")
    send(w.bob, f"@{w.alice_name} look")
    wait(w.alice, lambda d: message_with(d, f"@{w.alice_name} look") and message_with(
        d, f"@{w.alice_name} look").find_elements(By.CSS_SELECTOR, ".mention.me"), "the mention is marked")
    act(w.bob, "replying here", "edit")
    box = find(w.bob, "[data-testid=composer]")
    wait(w.bob, lambda d: box.get_attribute("value") == "replying here", "the composer holds the text")
    box.send_keys(" (edited)")
    box.send_keys(Keys.ENTER)
    m = wait_message(w.alice, "replying here (edited)")
    assert "edited" in m.find_element(By.CSS_SELECTOR, ".meta").text
    act(w.alice, "replying here (edited)", "React 👍")
    wait(w.bob, lambda d: "👍 1" in message_with(d, "replying here (edited)").text, "the reaction shows")
    act(w.bob, f"@{w.alice_name} look", "delete")
    wait(w.bob, lambda d: d.switch_to.alert, "the confirmation").accept()
    wait(w.alice, lambda d: any(e.text == "This message was deleted" for e in d.find_elements(
        By.CSS_SELECTOR, "[data-testid=tombstone]")), "the tombstone shows")
    assert message_with(w.alice, f"@{w.alice_name} look") is None
    shot(w.alice, "08-reply-edit-react-delete")


def test_phone_sized_window(world):
    """On a phone-sized window the list and the conversation take the screen in turn."""
    w = world
    phone = browser(w, width=390, height=800)
    ui_login(phone, w.base, w.bob_name)
    assert find(phone, "#chatlist").is_displayed()
    open_chat(phone, w.chat)
    wait(phone, lambda d: not d.find_element(By.ID, "chatlist").is_displayed(), "list hidden in a chat")
    wait_message(phone, "hello bob")
    shot(phone, "09-phone")
    w.phone = phone


def test_devices_listed_and_revoked(world):
    """Bob's settings list his devices (two browser profiles and the test's API login);
    revoking the phone's signs that browser out by itself (its poll answers 401
    device_revoked) and takes it off the list."""
    w = world
    phone_device = w.phone.execute_script("return JSON.parse(localStorage.getItem('natter.session')).device_id")
    item = f"[data-testid=devices] li[data-device-id='{phone_device}']"
    click(w.bob, "button[aria-label='Settings']")
    wait(w.bob, lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid=devices] li")) == 3
         and d.find_elements(By.CSS_SELECTOR, item), "three devices listed, the phone's among them")
    shot(w.bob, "10-settings-devices")
    click(w.bob, item + " button", "revoke the phone")
    wait(w.bob, lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid=devices] li")) == 2
         and not d.find_elements(By.CSS_SELECTOR, item), "the phone is off the list")
    click(w.bob, "dialog button[aria-label='Close']")
    wait(w.phone, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=login-form]"),
         "the revoked browser is back at the sign-in screen")


def test_token_refresh_unnoticed(world):
    """Once Alice's access token has expired (30 s on this server), her next send and her
    poll refresh it on token_expired (a new refresh token) and go on as if nothing happened."""
    w = world
    session = "return JSON.parse(localStorage.getItem('natter.session'))"
    before = w.alice.execute_script(session)
    exp = json.loads(base64.urlsafe_b64decode(before["access_token"].split(".")[1] + "=="))["exp"]
    wait(w.alice, lambda d: d.execute_script("return Date.now() / 1000") > exp + 1, "the token expired",
         timeout=120)
    send(w.alice, "after the token expired")
    wait_message(w.alice, "after the token expired")
    wait_message(w.bob, "after the token expired")
    after = w.alice.execute_script(session)
    assert after["refresh_token"] != before["refresh_token"]
    assert after["device_id"] == before["device_id"]
    assert not w.alice.find_elements(By.CSS_SELECTOR, "[data-testid=login-form]")


def test_docs_renders(world):
    """/docs renders the OpenAPI document with the vendored Redoc, with no request to
    another origin and no CSP violation."""
    w = world
    w.bob.get(w.base + "/docs")
    wait(w.bob, lambda d: d.find_elements(By.CSS_SELECTOR, ".api-content h1")
         and "Natter" in d.find_element(By.CSS_SELECTOR, ".api-content h1").text, "Redoc rendered the spec")
    wait(w.bob, lambda d: d.find_elements(By.XPATH, "//*[contains(text(), '/v1/chats/{id}/messages')]"),
         "operations listed")
    shot(w.bob, "12-docs")
    entries = w.bob.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    foreign = [u for u in entries if not (u.startswith(w.base) or u.startswith("blob:") or u.startswith("data:"))]
    assert not foreign, foreign
    logs = [e for e in w.bob.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    assert not logs, json.dumps(logs)[:2000]
