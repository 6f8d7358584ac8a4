"""Users and their sessions: register, log in, Account (a user logged in on devices)."""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from .client import Client, assert_status

TEST_PASSWORD = "Tr0ub4dor-and-3-horses"


def unique_username(prefix: str = "u") -> str:
    return prefix + secrets.token_hex(5)


def register(client: Client, username: str | None = None, password: str = TEST_PASSWORD,
             display_name: str | None = None) -> dict:
    """Register (asserting 201) and return the User."""
    body = {"username": username or unique_username(), "password": password}
    if display_name is not None:
        body["display_name"] = display_name
    r = client.post("/v1/auth/register", json=body)
    assert_status(r, 201)
    return r.json()


def login(client: Client, username: str, password: str = TEST_PASSWORD,
          device_name: str | None = None, platform: str | None = None) -> dict:
    """Log in (asserting 200) and return the TokenResponse."""
    body = {"username": username, "password": password}
    if device_name is not None:
        body["device_name"] = device_name
    if platform is not None:
        body["platform"] = platform
    r = client.post("/v1/auth/login", json=body)
    assert_status(r, 200)
    return r.json()


@dataclass
class Account:
    username: str
    password: str
    user: dict
    sessions: list = field(default_factory=list)   # TokenResponses, oldest first

    @property
    def id(self) -> int:
        return self.user["id"]

    @property
    def token(self) -> str:
        return self.sessions[0]["access_token"]

    @property
    def refresh_token(self) -> str:
        return self.sessions[0]["refresh_token"]

    @property
    def device_id(self) -> int:
        return self.sessions[0]["device_id"]

    def login(self, client: Client, **kw) -> dict:
        tokens = login(client, self.username, self.password, **kw)
        self.sessions.append(tokens)
        return tokens


def new_account(client: Client, devices: int = 1, display_name: str | None = None,
                prefix: str = "u") -> Account:
    """A registered user logged in on `devices` devices."""
    user = register(client, unique_username(prefix), TEST_PASSWORD, display_name)
    acct = Account(user["username"], TEST_PASSWORD, user)
    for i in range(devices):
        acct.login(client, device_name=f"device {i}")
    return acct
