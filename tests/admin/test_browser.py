"""The admin page in a real browser: Debian's chromium (``/usr/bin/chromium``, installed by ``make browser``, which
``make test`` runs) driven by Playwright, against b24bridge between two sandbox portals. Open the page, log in,
filter runs, replay a dead run and see it delivered; replay every dead run shown; ``/docs`` renders with nothing
fetched from outside. The runs page's screenshot goes to ``docs/admin-runs.png`` (the README shows it) when that
file is missing or ``B24BRIDGE_UPDATE_SCREENSHOTS=1``.

Every request the browser makes to anything but b24bridge is refused and counted (the page must work offline), and
every console error is counted (a script or style the Content-Security-Policy blocked would be one).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect, sync_playwright

from tests.admin.conftest import BROKEN, FIXED, TOKEN, dead_and_delivered
from tests.bridge_flows.conftest import BridgeService, result

CHROMIUM = Path(os.environ.get("B24BRIDGE_CHROMIUM", "/usr/bin/chromium"))
# As root in a container: no sandbox; and nothing in the background that would try to reach Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "admin-runs.png"
DELIVERY = 20_000  # ms: a replayed run is queued, delivered, and the table polls every 2 s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's chromium; `make browser` installs it "
            "(apt-get install chromium), or set B24BRIDGE_CHROMIUM to another Chromium"
        )
    with sync_playwright() as playwright:
        # Headless, with a fresh profile of its own (Playwright's launch makes one per browser).
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Visit:
    """A browser page on b24bridge that refuses (and notes) every request elsewhere, and notes console errors."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.base_url = base_url
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(base_url=base_url, viewport={"width": 1360, "height": 760})
        self.context.route("**/*", self._only_ours)
        self.page = self.context.new_page()
        self.page.on("console", self._console)

    def _only_ours(self, route: Route) -> None:
        if route.request.url.startswith(self.base_url):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser: Browser) -> Iterator[Callable[[str], Visit]]:
    opened: list[Visit] = []

    def open_visit(base_url: str) -> Visit:
        opened.append(Visit(browser, base_url))
        return opened[-1]

    yield open_visit
    for each in opened:
        each.close()


def filter_dead(page: Page) -> None:
    page.select_option("select[name=status]", "dead")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/admin/runs\?status=dead"))


def save_screenshot(page: Page, tmp_path: Path) -> None:
    shot = tmp_path / "admin-runs.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if not SCREENSHOT.exists() or os.environ.get("B24BRIDGE_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, SCREENSHOT)


def test_log_in_filter_replay_a_dead_run_and_see_it_delivered(
    bridge_factory: Callable[..., BridgeService], visit: Callable[[str], Visit], tmp_path: Path
) -> None:
    bridge = bridge_factory(BROKEN, admin_token=TOKEN)
    dead, _ = dead_and_delivered(bridge, dead=2, delivered=3)
    first, second = (run["id"] for run in dead)
    bridge.stop()
    bridge.start(FIXED, admin_token=TOKEN)  # the operator fixes the route file and restarts b24bridge

    browser = visit(bridge.base_url)
    page = browser.page
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    expect(page.locator("#runs tbody tr[data-run]")).to_have_count(5)
    expect(page.locator(".count[data-status=dead] b")).to_have_text("2")

    filter_dead(page)
    expect(page.locator("#runs tbody tr[data-run]")).to_have_count(2)
    page.locator(f"#runs-run-{first}").get_by_role("button", name="Replay").click()
    expect(page.locator("#replay-notice")).to_contain_text("Replayed 1 run")
    # Seen delivered without a reload: the replayed run's row and the counts refresh themselves.
    expect(page.locator(f"#replayed-run-{first}")).to_have_attribute("data-status", "succeeded", timeout=DELIVERY)
    expect(page.locator(".count[data-status=dead] b")).to_have_text("1", timeout=DELIVERY)
    titles = sorted(deal["TITLE"] for deal in result(bridge.target, "crm.deal.list", {"select": ["TITLE"]}))
    assert titles[0] in ("Needs a fix 1", "Needs a fix 2") and titles[1:] == ["Order 1", "Order 2", "Order 3"]

    page.get_by_role("link", name="Clear").click()
    expect(page.locator("#runs tbody tr[data-status=succeeded]")).to_have_count(4)
    expect(page.locator(f"#runs-run-{second}")).to_have_attribute("data-status", "dead")
    save_screenshot(page, tmp_path)

    page.locator(f"#runs-run-{first}").get_by_role("link", name=str(first)).click()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("table.calls")).to_contain_text("crm.deal.add")

    page.goto("/admin/runs")
    filter_dead(page)
    page.get_by_role("button", name="Replay all dead runs shown").click()
    expect(page.locator(f"#replayed-run-{second}")).to_have_attribute("data-status", "succeeded", timeout=DELIVERY)
    assert [run["status"] for run in bridge.settled_runs(5)] == ["succeeded"] * 5

    page.goto("/docs")  # Swagger UI from b24bridge's own assets, documenting the admin API
    expect(page.get_by_text("/api/runs/replay", exact=True)).to_be_visible()
    assert browser.outside == [] and browser.errors == []
