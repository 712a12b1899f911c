"""The CLI's management-API client (``cli/client.py``) against the real server: what it sends, how errors read."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cargohold.cli.client import (
    ApiClient,
    ApiError,
    AuthenticationFailed,
    Conflict,
    Credentials,
    NotFound,
    PermissionDenied,
)
from clihelpers import unique
from servers import Server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(
        data_dir=tmp_path_factory.mktemp("cargohold-cli-client") / "data", auth=True, workers=1,
        extra_env={"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "1000"},
    ) as server:
        yield server


@pytest.fixture
def admin(srv: Server) -> ApiClient:
    return ApiClient(srv.url, Credentials("admin", srv.admin_password))


def test_basic_and_bearer_credentials_are_accepted(srv: Server, admin: ApiClient) -> None:
    assert admin.me() == {"name": "admin", "kind": "user", "admin": True}
    robot = admin.create_token(unique("ci"), [], 1)
    assert ApiClient(srv.url, Credentials(None, robot["token"], "env")).me() == {"name": robot["name"], "kind": "robot", "admin": False}


def test_problem_detail_becomes_the_error(srv: Server, admin: ApiClient) -> None:
    with pytest.raises(AuthenticationFailed) as unauthorized:
        ApiClient(srv.url, Credentials("admin", "wrong-password")).me()
    assert unauthorized.value.status == 401 and unauthorized.value.detail
    with pytest.raises(NotFound) as missing:
        admin.get_user("nobody")
    assert missing.value.detail == "no user named 'nobody'"
    with pytest.raises(ApiError) as bad:
        admin.create_user(unique("bob"), "short")
    assert bad.value.status == 422 and "at least 12 characters" in bad.value.detail
    with pytest.raises(Conflict):
        admin.create_user("admin", "long-enough-password")
    carol = unique("carol")
    admin.create_user(carol, "carol-password-1")
    with pytest.raises(PermissionDenied) as denied:
        ApiClient(srv.url, Credentials(carol, "carol-password-1")).list_users()
    assert denied.value.detail == f"{carol} is not an admin"


def test_non_problem_errors_still_say_something(admin: ApiClient) -> None:
    with pytest.raises(NotFound) as caught:
        admin.request("GET", "/api/v2/nothing")
    assert caught.value.detail


def test_names_are_one_path_segment(admin: ApiClient) -> None:
    """``../tokens`` is a user name, not a way to reach /api/v1/tokens."""
    with pytest.raises(NotFound) as caught:
        admin.get_user("../tokens")
    assert "../tokens" in caught.value.detail


def test_round_trips(admin: ApiClient) -> None:
    readers, bob = unique("readers"), unique("bob")
    rules = [{"repository": "hub/*", "actions": ["content/read", "metadata/read"]}]
    admin.create_scope_map(readers, rules, "pull from hub")
    assert admin.get_scope_map(readers)["rules"] == rules
    assert readers in [m["name"] for m in admin.list_scope_maps()]
    user = admin.create_user(bob, "bob-password-123", False, [readers])
    assert user["scope_maps"] == [readers]
    assert admin.update_user(bob, {"admin": True})["admin"] is True
    assert admin.delete_user(bob) is None
    admin.delete_scope_map(readers)
    assert readers not in [m["name"] for m in admin.list_scope_maps()]


def test_token_expiry_is_sent_only_when_chosen(admin: ApiClient) -> None:
    now = datetime.now(UTC)
    default = admin.create_token(unique("default"))
    forever = admin.create_token(unique("forever"), expires_in_days=None)
    week = admin.create_token(unique("week"), expires_in_days=7)
    assert forever["expires_at"] is None
    expires = datetime.fromisoformat(week["expires_at"])
    assert timedelta(days=6) < expires - now < timedelta(days=8)
    assert datetime.fromisoformat(default["expires_at"]) - now > timedelta(days=8)  # the server's default, not 7


def test_redirects_are_not_followed() -> None:
    """A server that redirects gets no second request: the Authorization header goes nowhere else."""
    seen: list[str] = []

    class Redirecting(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ApiError) as caught:
            ApiClient(f"http://127.0.0.1:{server.server_address[1]}", Credentials("admin", "x")).me()
        assert caught.value.status == 302
        assert seen == ["/api/v1/me"]
    finally:
        server.shutdown()
        server.server_close()
