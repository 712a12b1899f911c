"""The error registry is complete, and the two renderers give each API its shape.

Every ``DomainError`` subclass anywhere in the package must answer with a status
registered for its own code (``web/codes.py``): a new error class that
introduces a code without registering it fails here, before a client sees it as
a 500.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

import cargohold
from cargohold.auth.errors import InvalidCredentials, LoginThrottled
from cargohold.oci import errors as e
from cargohold.store.identities import LastAdmin
from cargohold.transfer.importer import SourceRateLimited
from cargohold.web import codes
from cargohold.web.errors import error_response_for, oci_error, problem

README = Path(__file__).resolve().parents[2] / "README.md"
# The classes that stand for "not the client's fault"; nothing else may answer 500.
SERVER_FAULTS = {e.RegistryError, e.StorageFailure}


def _all_modules() -> None:
    for info in pkgutil.walk_packages(cargohold.__path__, "cargohold."):
        if ".migrations." in info.name or info.name.endswith("__main__"):
            continue  # alembic revision scripts need alembic's context; __main__ runs the CLI
        importlib.import_module(info.name)


def _subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def unregistered(classes: set[type[e.DomainError]]) -> list[str]:
    """The classes whose code has no registered status, as ``module.Class (CODE)``."""
    missing = []
    for cls in classes:
        owner = codes.registered_class(cls)
        if owner is None or owner.code != cls.code or (codes.STATUS[owner] == 500 and owner not in SERVER_FAULTS):
            missing.append(f"{cls.__module__}.{cls.__qualname__} ({cls.code})")
    return sorted(missing)


def domain_errors() -> set[type[e.DomainError]]:
    _all_modules()
    return {cls for cls in _subclasses(e.DomainError) if cls.__module__.startswith("cargohold.")}


def test_every_domain_error_has_a_registered_code_and_status() -> None:
    classes = domain_errors()
    assert len(classes) > 50  # the walk found the package's errors, not just the ones imported above
    assert unregistered(classes) == []


def test_a_new_error_without_a_registration_is_caught() -> None:
    class Unregistered(e.DomainError):
        code = "BRAND_NEW"

    class Recoded(LastAdmin):
        code = "ANOTHER_CODE"

    class Inherits(LastAdmin):
        """Same code as its parent: answered with the parent's status, which is registered."""

    class NoCode(e.DomainError):
        """Forgot its code: would be an UNKNOWN 500."""

    assert unregistered({Unregistered, Recoded, Inherits, NoCode}) == sorted(
        f"{__name__}.{name} ({code})"
        for name, code in [
            ("test_a_new_error_without_a_registration_is_caught.<locals>.Unregistered", "BRAND_NEW"),
            ("test_a_new_error_without_a_registration_is_caught.<locals>.Recoded", "ANOTHER_CODE"),
            ("test_a_new_error_without_a_registration_is_caught.<locals>.NoCode", "UNKNOWN"),
        ]
    )


def test_codes_are_unique_per_status() -> None:
    """A code names one kind of failure; it answers with one status, except where the OCI spec's code is reused."""
    statuses: dict[str, set[int]] = {}
    for cls, status in codes.STATUS.items():
        statuses.setdefault(cls.code, set()).add(status)
    # 416 and 413 reuse the spec's code of the family they belong to (no spec code exists for them).
    assert {c: s for c, s in statuses.items() if len(s) > 1} == {
        "BLOB_UNKNOWN": {404, 416}, "BLOB_UPLOAD_INVALID": {400, 416}, "SIZE_INVALID": {400, 413},
    }


def test_readme_lists_every_code_with_its_status() -> None:
    table = dict(re.findall(r"^\| `([A-Z_]+)` \| ([0-9, ]+) \|", README.read_text(), re.M))
    for cls, status in codes.STATUS.items():
        if cls in SERVER_FAULTS:
            continue
        assert cls.code in table, f"README's API errors table lacks {cls.code}"
        assert str(status) in table[cls.code].replace(" ", "").split(","), f"{cls.code}: README says {table[cls.code]}, registry {status}"


def _json(response) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(response.body)


def test_v2_renders_oci_error_json() -> None:
    response = oci_error(e.BlobUnknown("no such blob", detail={"digest": "sha256:00"}))
    assert response.status == 404
    assert response.content_type == "application/json"
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert _json(response) == {"errors": [{"code": "BLOB_UNKNOWN", "message": "no such blob", "detail": {"digest": "sha256:00"}}]}


def test_api_renders_problem_json() -> None:
    response = problem(LastAdmin("refusing to delete 'root': it is the last admin"), {"extra_member": 1})
    assert response.status == 409
    assert response.content_type == "application/problem+json"
    assert _json(response) == {
        "type": "about:blank", "title": "Conflict", "status": 409,
        "detail": "refusing to delete 'root': it is the last admin", "code": "LAST_ADMIN", "extra_member": 1,
    }


def test_validation_failures_carry_their_field_errors() -> None:
    errors = [{"loc": ["body", "name"], "msg": "too long", "type": "string_too_long"}]
    body = _json(problem(codes.ValidationFailed("body.name: too long", errors)))
    assert body["status"] == 422 and body["code"] == "VALIDATION_FAILED" and body["errors"] == errors


@pytest.mark.parametrize(
    ("error", "header"),
    [(LoginThrottled(30), "30"), (SourceRateLimited("slow down", retry_after=2.5), "3"), (e.TooManyRequests(), None)],
)
def test_both_renderers_pass_retry_after_on(error: e.DomainError, header: str | None) -> None:
    for response in (oci_error(error), problem(error)):
        assert response.status == 429
        assert response.headers.get("Retry-After") == header


def test_the_path_chooses_the_format() -> None:
    error = InvalidCredentials()
    v2 = error_response_for(make_mocked_request("GET", "/v2/"), error)
    api = error_response_for(make_mocked_request("GET", "/api/v1/users"), error)
    assert (v2.status, v2.content_type, _json(v2)["errors"][0]["code"]) == (401, "application/json", "UNAUTHORIZED")
    assert (api.status, api.content_type, _json(api)["code"]) == (401, "application/problem+json", "UNAUTHORIZED")


def test_an_unregistered_error_is_a_500_not_a_crash() -> None:
    class Stray(e.DomainError):
        code = "STRAY"

    assert oci_error(Stray()).status == 500


def test_a_detail_json_cannot_hold_is_told_as_text_not_a_500() -> None:
    from cargohold.oci.digest import Digest

    digest = Digest.parse("sha256:" + "a" * 64)
    response = oci_error(e.BlobUnknown(detail={"digest": digest, "seen": {1}}))
    assert response.status == 404
    assert _json(response)["errors"][0]["detail"] == {"digest": str(digest), "seen": "{1}"}
    assert problem(e.BlobUnknown(), {"extra": b"x"}).status == 404
