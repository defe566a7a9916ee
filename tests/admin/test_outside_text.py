"""Text from outside that PostgreSQL cannot hold (a NUL, bytes that are not UTF-8, a lone surrogate) or that is too
long is refused where it comes in, naming the parameter: a JSON 400, never a 500 (issue 15).

The first case is what the admin API's fuzz test found on a fresh clone (it answered 500: psycopg's DataError).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.admin.conftest import TOKEN, bearer, login
from tests.livehttp import LiveServer

FOUND_BY_FUZZING = "/api/runs/counts?portal=E%00%C3%99%C2%99%C3%88%F4%83%BE%B6&status=queued"


def _refused(answer: httpx.Response, field: str) -> str:
    assert answer.status_code == 400, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["field"] == field, body
    assert f"{field}: " in body["error"], body
    error: str = body["error"]
    return error


@pytest.fixture
def server(serve_admin: Callable[..., LiveServer]) -> LiveServer:
    return serve_admin(admin_token=TOKEN)


def test_the_input_the_fuzz_test_found_is_a_400_naming_the_parameter(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url, headers=bearer(), timeout=30) as api:
        assert "NUL" in _refused(api.get(FOUND_BY_FUZZING), "portal")
        # The same parameter without the NUL is a filter like any other.
        assert api.get("/api/runs/counts?portal=E%C3%99&status=queued").status_code == 200


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ("/api/runs?route=a%00b", "route"),
        ("/api/runs?route=%FF%FE", "route"),  # not UTF-8
        ("/api/runs?since=%ED%A0%80", "since"),  # a surrogate, encoded: not UTF-8 either
        ("/api/runs?kind=robot&status=%00", "status"),
        ("/api/runs?a%00b=1", "a b"),  # a bad name is named as well as it can be
        ("/api/portals/%00", "member_id"),
        ("/api/portals/%C3", "member_id"),
        ("/api/runs/%00/replay", "run_id"),
        ("/api/nothing/%00", "path"),  # no route: no parameter to name
    ],
)
def test_nul_and_invalid_text_in_the_url_are_refused_naming_where(server: LiveServer, target: str, field: str) -> None:
    with httpx.Client(base_url=server.base_url, headers=bearer(), timeout=30) as api:
        _refused(api.request("POST" if target.endswith("replay") else "GET", target), field)


def test_overlong_and_unknown_values_are_refused_naming_the_parameter(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url, headers=bearer(), timeout=30) as api:
        for params, field in (
            ({"portal": "p" * 201}, "portal"),
            ({"route": "r" * 201}, "route"),
            ({"since": "1" * 65}, "since"),
            ({"status": "lost"}, "status"),
            ({"kind": "cron"}, "kind"),
            ({"limit": "0"}, "limit"),
        ):
            answer = api.get("/api/runs", params=params)
            assert answer.status_code == 400 and answer.json()["field"] == field, (params, answer.text)
        assert api.get(f"/api/portals/{'m' * 65}").json()["field"] == "member_id"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/runs/replay", '{"status": "dead", "portal": "a\\u0000"}', "portal"),
        ("/api/runs/replay", '{"status": "dead", "route": "\\ud800"}', "route"),
        ("/api/robots/sync", '{"portal": "\\u0000"}', "portal"),
    ],
)
def test_json_bodies_with_text_postgresql_cannot_hold_are_refused(
    server: LiveServer, path: str, body: str, field: str
) -> None:
    headers = {**bearer(), "Content-Type": "application/json"}
    answer = httpx.post(f"{server.base_url}{path}", content=body, headers=headers, timeout=30)
    assert answer.status_code == 400 and answer.json()["field"] == field, answer.text


def test_the_page_refuses_the_same_input(server: LiveServer) -> None:
    page = login(server.base_url)
    for target, field in (
        ("/admin/runs?portal=E%00", "portal"),
        ("/admin/runs/counts?route=%FF", "route"),
        ("/admin/runs/table?ids=1%002", "ids"),
        ("/admin/runs/%00", "run_id"),
    ):
        _refused(page.get(target), field)
    # Typed text the page can show is shown back with what is wrong with it, as before.
    shown = page.get("/admin/runs", params={"status": "lost"})
    assert shown.status_code == 200 and "status: one of" in shown.text
