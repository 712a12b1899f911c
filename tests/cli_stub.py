"""An in-memory stand-in for the management API (``/api/v1``), for the CLI's unit tests.

It follows the contract the real API implements (problem+json errors with
``title``/``status``/``detail``, 201 on create, 204 on delete) closely enough
to exercise the client and the commands without starting cargohold. The
integration tests (tests/integration/test_cli.py) run against the real server.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class StubApi:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    robots: dict[str, dict[str, Any]] = field(default_factory=dict)
    robot_tokens: dict[str, str] = field(default_factory=dict)  # token -> robot name
    scope_maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    audit_page_cap: int = 1000
    server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.add_user("admin", "admin-password-123", admin=True)

    def add_user(self, name: str, password: str, admin: bool = False, scope_maps: list[str] | None = None) -> None:
        self.users[name] = {"name": name, "admin": admin, "scope_maps": scope_maps or [], "created_at": _now()}
        self.passwords[name] = password

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "StubApi":
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                api.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, payload, ctype = api.dispatch(self.command, self.path, self.headers.get("Authorization"), body)
                data = b"" if payload is None else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "http://example.invalid/elsewhere")
                if data:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # ---- the API ---------------------------------------------------------------------------------

    def _caller(self, authorization: str | None) -> dict[str, Any] | None:
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            name = self.robot_tokens.get(value)
            return {"name": name, "kind": "robot", "admin": False} if name else None
        if scheme.lower() == "basic":
            user, _, password = base64.b64decode(value).decode().partition(":")
            if password in self.robot_tokens and self.robot_tokens[password] == user:
                return {"name": user, "kind": "robot", "admin": False}
            if self.passwords.get(user) == password:
                return {"name": user, "kind": "user", "admin": self.users[user]["admin"]}
        return None

    def dispatch(self, method: str, target: str, authorization: str | None, body: Any) -> tuple[int, Any, str]:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/redirect/api/v1/me":
            return 302, None, ""
        if not path.startswith("/api/v1/"):
            return 404, b"404: Not Found", "text/plain"
        caller = self._caller(authorization)
        if caller is None:
            self.events.append(self._event("-", "login", "-", "denied"))
            return problem(401, "Unauthorized", "authentication required: wrong username or password")
        segments = [unquote(s) for s in path[len("/api/v1/") :].split("/")]
        resource, name = segments[0], (segments[1] if len(segments) > 1 else None)
        if resource == "me" and method == "GET":
            return 200, caller, "application/json"
        if not caller["admin"]:
            return problem(403, "Forbidden", f"{caller['name']} is not an admin")
        handler = getattr(self, f"_{resource.replace('-', '_')}", None)
        if handler is None:
            return problem(404, "Not Found", f"no such resource {resource}")
        return handler(method, name, body, query, caller)

    def _event(self, actor: str, action: str, target: str, outcome: str = "ok") -> dict[str, Any]:
        return {"id": len(self.events) + 1, "at": _now(), "actor": actor, "client": "127.0.0.1",
                "action": action, "target": target, "outcome": outcome, "detail": None}

    def _users(self, method: str, name: str | None, body: Any, query: Any, caller: dict[str, Any]) -> tuple[int, Any, str]:
        if name is None:
            if method == "GET":
                return 200, list(self.users.values()), "application/json"
            if body["name"] in self.users:
                return problem(409, "Conflict", f"user {body['name']} already exists")
            if len(body["password"]) < 12:
                return problem(400, "Bad Request", "passwords need at least 12 characters")
            self.add_user(body["name"], body["password"], body.get("admin", False), body.get("scope_maps", []))
            self.events.append(self._event(caller["name"], "user.create", body["name"]))
            return 201, self.users[body["name"]], "application/json"
        if name not in self.users:
            return problem(404, "Not Found", f"no user named {name}")
        if method == "GET":
            return 200, self.users[name], "application/json"
        if method == "PATCH":
            for key in ("admin", "scope_maps"):
                if key in body:
                    self.users[name][key] = body[key]
            if "password" in body:
                self.passwords[name] = body["password"]
            return 200, self.users[name], "application/json"
        del self.users[name], self.passwords[name]
        return 204, None, ""

    def _tokens(self, method: str, name: str | None, body: Any, query: Any, caller: dict[str, Any]) -> tuple[int, Any, str]:
        if name is None:
            if method == "GET":
                return 200, list(self.robots.values()), "application/json"
            days = body.get("expires_in_days", 90)
            expires = None if days is None else (datetime.now(UTC) + timedelta(days=days)).isoformat()
            token = "chr_" + secrets.token_urlsafe(32)
            robot = {"name": body["name"], "scope_maps": body.get("scope_maps", []), "expires_at": expires,
                     "created_by": caller["name"], "created_at": _now(), "expired": False}
            self.robots[body["name"]] = robot
            self.robot_tokens[token] = body["name"]
            return 201, {**robot, "token": token}, "application/json"
        if name not in self.robots:
            return problem(404, "Not Found", f"no robot named {name}")
        if method == "GET":
            return 200, self.robots[name], "application/json"
        del self.robots[name]
        self.robot_tokens = {t: n for t, n in self.robot_tokens.items() if n != name}
        return 204, None, ""

    def _scope_maps(self, method: str, name: str | None, body: Any, query: Any, caller: dict[str, Any]) -> tuple[int, Any, str]:
        if name is None:
            if method == "GET":
                return 200, list(self.scope_maps.values()), "application/json"
            for rule in body["rules"]:
                if any(a not in ("content/read", "content/write", "content/delete", "metadata/read") for a in rule["actions"]):
                    return problem(400, "Bad Request", "actions must be some of content/read, content/write, content/delete, metadata/read")
            self.scope_maps[body["name"]] = {**body, "created_at": _now()}
            return 201, self.scope_maps[body["name"]], "application/json"
        if name not in self.scope_maps:
            return problem(404, "Not Found", f"no scope map named {name}")
        if method == "GET":
            return 200, self.scope_maps[name], "application/json"
        del self.scope_maps[name]
        return 204, None, ""

    def _audit(self, method: str, name: str | None, body: Any, query: Any, caller: dict[str, Any]) -> tuple[int, Any, str]:
        limit = min(int(query.get("limit", ["100"])[0]), self.audit_page_cap)
        before = int(query["before"][0]) if "before" in query else None
        events = [e for e in reversed(self.events) if before is None or e["id"] < before]
        if "actor" in query:
            events = [e for e in events if e["actor"] == query["actor"][0]]
        if "action" in query:
            events = [e for e in events if e["action"] == query["action"][0]]
        page = events[:limit]
        following = page[-1]["id"] if len(events) > limit else None
        return 200, {"events": page, "next": following}, "application/json"


def problem(status: int, title: str, detail: str) -> tuple[int, Any, str]:
    return status, {"type": "about:blank", "title": title, "status": status, "detail": detail}, "application/problem+json"
