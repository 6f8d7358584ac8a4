"""openapi/openapi.yaml: loading it once per session and checking real responses against
it (path matching, status, headers, media type, JSON Schema with the spec's formats).
"""
from __future__ import annotations

import datetime
import fnmatch
import json as jsonlib
import re
import threading
from pathlib import Path

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator, FormatChecker, RefResolver

from .env import SPEC_PATH

RFC3339_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _media_base(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def media_type(resp: requests.Response) -> str:
    """The response's media type without parameters, lower case."""
    return _media_base(resp.headers.get("Content-Type"))


def _is_json_media(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


FORMAT_CHECKER = FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _check_date_time(value):
    if not isinstance(value, str):
        return True
    if not RFC3339_UTC_RE.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 UTC time like 2026-11-21T09:10:31.123Z")
    datetime.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    return True


@FORMAT_CHECKER.checks("int64", raises=ValueError)
def _check_int64(value):
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        raise ValueError(f"{value} out of int64 range")
    return True


@FORMAT_CHECKER.checks("int32", raises=ValueError)
def _check_int32(value):
    if isinstance(value, int) and not -2**31 <= value < 2**31:
        raise ValueError(f"{value} out of int32 range")
    return True


# Used only when the spec has no components.schemas.Problem.
FALLBACK_PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "code", "request_id"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "instance": {"type": "string"}, "code": {"type": "string"},
        "request_id": {"type": "string"}, "field": {"type": "string"},
    },
}


def template_regex(template: str) -> tuple[re.Pattern, int]:
    parts = re.split(r"(\{[^}/]+\})", template)
    rx = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(rx), sum(1 for p in parts if p.startswith("{"))


def normalize_template(template: str) -> str:
    """/v1/users/{id} and /v1/users/:id both become /v1/users/{}."""
    template = re.sub(r"\{[^}/]*\}", "{}", template)
    return re.sub(r"(?<=/):[^/]+", "{}", template)


class OpenAPI:
    """The spec, with response checking of real responses."""

    def __init__(self, doc: dict):
        if not isinstance(doc, dict) or "paths" not in doc:
            raise ValueError("not an OpenAPI document (no `paths`)")
        self.doc = doc
        self._lock = threading.Lock()
        self._resolver = RefResolver.from_schema(doc)
        self._validators: dict = {}
        self._problem_ref = {"$ref": "#/components/schemas/Problem"}
        paths = []
        for template, item in (doc.get("paths") or {}).items():
            rx, nparams = template_regex(template)
            paths.append((nparams, len(paths), template, rx, item))
        paths.sort(key=lambda p: (p[0], p[1]))     # literal paths win over templated ones
        self._paths = [(t, rx, item) for _, _, t, rx, item in paths]

    # -- navigation
    def pointer(self, ref: str):
        if not ref.startswith("#"):
            raise KeyError(f"only local $refs are supported: {ref}")
        node = self.doc
        for token in ref[1:].split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def deref(self, obj):
        seen = 0
        while isinstance(obj, dict) and "$ref" in obj:
            obj = self.pointer(obj["$ref"])
            seen += 1
            if seen > 20:
                raise ValueError("$ref loop")
        return obj

    def match_path(self, path: str):
        path = path.split("?", 1)[0]
        for template, rx, item in self._paths:
            if rx.fullmatch(path):
                return template, self.deref(item)
        return None

    def operations(self):
        """(METHOD, template, operation) of every operation."""
        for template, _, item in self._paths:
            item = self.deref(item)
            for method in HTTP_METHODS:
                if method in item:
                    yield method.upper(), template, item[method]

    def problem_schema(self):
        """Schema for problems of undocumented responses (404 no route, 405, preflight 403).

        Always the same object: validators are cached by id()."""
        if "Problem" in ((self.doc.get("components") or {}).get("schemas") or {}):
            return self._problem_ref
        return FALLBACK_PROBLEM_SCHEMA

    # -- validation
    def validate(self, schema, instance) -> list[str]:
        key = id(schema)                  # schemas are parts of self.doc: ids are stable
        with self._lock:                  # the resolver keeps a scope stack: one at a time
            validator = self._validators.get(key)
            if validator is None:
                validator = Draft202012Validator(schema, resolver=self._resolver,
                                                 format_checker=FORMAT_CHECKER)
                self._validators[key] = validator
            errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
            return [f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                    for e in errors]

    def _check_body(self, schema, resp, what) -> list[str]:
        try:
            data = jsonlib.loads(resp.content)
        except ValueError as exc:
            return [f"{what}: body is not JSON ({exc})"]
        return [f"{what}: schema: {m}" for m in self.validate(schema, data)]

    def _check_undocumented_problem(self, resp, what) -> list[str]:
        if media_type(resp) != "application/problem+json":
            return [f"{what}: expected application/problem+json, got "
                    f"{resp.headers.get('Content-Type')!r}"]
        return self._check_body(self.problem_schema(), resp, what)

    def check_response(self, method: str, path: str, resp: requests.Response) -> list[str]:
        """Everything about `resp` that disagrees with the spec (empty list: conforms)."""
        method = method.upper()
        status = resp.status_code
        what = f"{method} {path} -> {status}"
        generic = self.doc.get("x-natter-generic-responses") or {}
        match = self.match_path(path)
        if match is None:
            if method == "OPTIONS" and status in (204, 403):
                # a CORS preflight is answered on any path: as documented under each path
                return self._check_documented(self._any_options_op(), method, path, resp)
            if status != 404:
                return [f"{what}: path is in no path template of the spec; only 404 allowed"]
            if "unknownPath" in generic:
                return self._check_responses(generic["unknownPath"], resp, what,
                                             "x-natter-generic-responses/unknownPath")
            return self._check_undocumented_problem(resp, what)
        template, item = match
        op = item.get(method.lower())
        if op is None:
            if method == "OPTIONS":          # CORS preflight, answered for every path
                if status == 204:
                    return [f"{what}: preflight 204 has a body"] if resp.content else []
                if status == 403:
                    return self._check_undocumented_problem(resp, what)
                return [f"{what}: undocumented OPTIONS may only answer 204 or 403"]
            if status != 405:
                return [f"{what}: {method} is not an operation of {template}; only 405 allowed"]
            if "unsupportedMethod" in generic:
                return self._check_responses(generic["unsupportedMethod"], resp, what,
                                             "x-natter-generic-responses/unsupportedMethod")
            return self._check_undocumented_problem(resp, what)
        return self._check_documented(op, method, template, resp)

    def _any_options_op(self) -> dict:
        for method, _, op in self.operations():
            if method == "OPTIONS":
                return op
        return {"responses": {}}

    def _check_documented(self, op, method, template, resp) -> list[str]:
        what = f"{method} {template} -> {resp.status_code}"
        return self._check_responses(op.get("responses") or {}, resp, what,
                                     f"{method} {template}")

    def _check_responses(self, responses, resp, what, where) -> list[str]:
        """`resp` against a Responses object (status, headers, media type, schema)."""
        status = resp.status_code
        robj = (responses.get(str(status)) or responses.get(f"{status // 100}XX")
                or responses.get("default"))
        if robj is None:
            return [f"{what}: status {status} is not documented for {where} "
                    f"(documented: {sorted(map(str, responses))})"]
        robj = self.deref(robj)
        errs = []
        for hname, hobj in (robj.get("headers") or {}).items():
            hobj = self.deref(hobj)
            if hobj.get("required") and hname not in resp.headers:
                errs.append(f"{what}: required header {hname} missing")
        content = robj.get("content") or {}
        if not content:
            if resp.content:
                errs.append(f"{what}: the spec documents no body, got {len(resp.content)} "
                            f"bytes of {resp.headers.get('Content-Type')!r}")
            return errs
        got = media_type(resp)
        media = None
        for documented, mobj in content.items():
            if fnmatch.fnmatchcase(got, _media_base(documented)):
                media = self.deref(mobj)
                break
        if media is None:
            errs.append(f"{what}: Content-Type {resp.headers.get('Content-Type')!r} is not "
                        f"documented (documented: {list(content)})")
            return errs
        schema = media.get("schema")
        if schema is not None and _is_json_media(got):
            errs += self._check_body(schema, resp, what)
        return errs


# load_spec()'s cache, rebound by it: read it through load_spec() only.
_SPEC: OpenAPI | None = None
_SPEC_LOCK = threading.Lock()


def read_spec(path: Path) -> OpenAPI:
    if not path.exists():
        pytest.fail(f"{path} does not exist", pytrace=False)
    return OpenAPI(yaml.safe_load(path.read_text(encoding="utf-8")))


def load_spec() -> OpenAPI:
    """openapi/openapi.yaml, parsed once per session."""
    global _SPEC
    with _SPEC_LOCK:
        if _SPEC is None:
            _SPEC = read_spec(SPEC_PATH)
        return _SPEC
