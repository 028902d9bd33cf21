"""The web dashboard (/ui/) in a real browser: Debian's Chromium driven by Playwright (its
``executable_path``; ``playwright install`` downloads browsers, which CI cannot), against a
real ``iochost serve`` with the bundled examples and both tokens configured, real CA writes,
real REST calls beside the page. Screenshots of the overview and of a plugin page are kept
in ``test-artifacts/`` (``IOCHOST_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import EXAMPLES, REPO, free_port, wait_for
from daemon_harness import Daemon, bearer
from gitrepos import Repo
from sample_plugins import SLOW_JOB, SLOW_JOB_CONFIG

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):  # CI installs it (.ci/run): there it must run
    pytest.skip("Debian's chromium is not installed (apt install chromium)", allow_module_level=True)

READ_TOKEN = "rd-" + secrets.token_hex(16)
ADMIN_TOKEN = "ad-" + secrets.token_hex(16)
PREFIX = "IOCUI"
MONITOR = f"{PREFIX}:TEMPERATURE-MONITOR:"
ARTIFACTS = Path(os.environ.get("IOCHOST_TEST_ARTIFACTS", REPO / "test-artifacts"))
LIVE = 3000  # ms: what the issue promises for a change to show without a reload
EXAMPLE_NAMES = ["beam-shutter", "diagnostics", "over-temperature-interlock", "temperature-monitor"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ui") / "data", "--examples", str(EXAMPLES), "--prefix", PREFIX,
               env={"IOCHOST_READ_TOKEN": READ_TOKEN, "IOCHOST_ADMIN_TOKEN": ADMIN_TOKEN})
    with d.serving():
        with d.client(token=ADMIN_TOKEN) as api:
            wait_for(lambda: api.get("/health").json()["plugins"].get("running") == 4, timeout=60,
                     what="the four examples running")
        yield d


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM is not None, "CI must have Debian's chromium (.ci/run installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


class Page:
    """A browser tab on the daemon that records every request and every console error."""

    def __init__(self, browser: Any, daemon: Daemon, width: int = 1280, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.origin = daemon.url
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.refusals: set[int] = set()  # statuses a test provokes: Chromium logs each as a console error
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, path: str) -> Any:
        self.page.goto(self.origin + path)
        return self.page

    def sign_in(self, token: str) -> None:
        self.page.fill('[name="token"]', token)
        self.page.press('[name="token"]', "Enter")  # the keyboard submits the form

    def close(self) -> None:
        foreign = [url for url in self.requests if not url.startswith(self.origin + "/")]
        self.context.close()
        assert foreign == [], f"requests left the daemon's origin: {foreign}"
        provoked = tuple(f"the server responded with a status of {status} " for status in self.refusals)
        errors = [text for text in self.errors if not (text.startswith("Failed to load resource") and
                                                       any(part in text for part in provoked))]
        assert errors == [], f"console errors: {errors}"


@pytest.fixture
def admin_page(browser: Any, daemon: Daemon) -> Iterator[Page]:
    tab = Page(browser, daemon)
    tab.open("/ui/")
    tab.sign_in(ADMIN_TOKEN)
    expect(tab.page.locator('[data-plugin="temperature-monitor"]')).to_be_visible()
    yield tab
    tab.close()


def _row(page: Any, name: str) -> Any:
    return page.locator(f'tr[data-plugin="{name}"]')


def _state(daemon: Daemon, name: str) -> str:
    with daemon.client(token=READ_TOKEN) as api:
        return api.get(f"/plugins/{name}").json()["state"]


def test_the_overview_lists_the_examples_and_follows_rest_changes_live(admin_page: Page, daemon: Daemon) -> None:
    page = admin_page.page
    rows = page.locator("tr[data-plugin]")
    expect(rows).to_have_count(4)
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.plugin)")) == EXAMPLE_NAMES
    expect(_row(page, "temperature-monitor")).to_have_attribute("data-state", "running")
    expect(page.locator("[data-health]")).to_have_attribute("data-status", "ok")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-overview.png"), full_page=True)
    page.evaluate("window.notReloaded = true")
    with daemon.client(token=ADMIN_TOKEN) as api:
        assert api.post("/plugins/beam-shutter/stop").status_code == 200
    expect(_row(page, "beam-shutter")).to_have_attribute("data-state", "stopped", timeout=LIVE)
    assert page.evaluate("window.notReloaded") is True  # the change came by the event stream
    _row(page, "beam-shutter").locator('[data-action="start"]').click()
    expect(_row(page, "beam-shutter")).to_have_attribute("data-state", "running", timeout=30_000)
    assert _state(daemon, "beam-shutter") == "running"
    expect(_row(page, "beam-shutter").locator("output")).to_have_attribute("data-ok", "true")


def test_a_job_runs_from_the_keyboard_and_shows_its_result(admin_page: Page) -> None:
    page = admin_page.page
    _row(page, "diagnostics").locator('[data-action="run"]').focus()
    page.keyboard.press("Enter")  # from the keyboard, as every action
    outcome = _row(page, "diagnostics").locator("output")
    expect(outcome).to_have_attribute("data-ok", "true", timeout=30_000)
    expect(outcome).to_contain_text("run: succeeded")


def test_the_plugin_page_shows_pvs_live_and_writes_them(admin_page: Page, daemon: Daemon, ca: Any) -> None:
    page = admin_page.open("/ui/plugins/temperature-monitor")
    article = page.locator('article[data-plugin="temperature-monitor"]')
    expect(article).to_have_attribute("data-state", "running")
    setpoint = page.locator(f'[data-pv="{MONITOR}SETPOINT"]')
    expect(setpoint).not_to_be_empty()
    expect(page.locator(f'[data-pv="{MONITOR}STATUS"]')).to_have_text("RUN")  # the mbbi's index, named
    ca.caput(MONITOR + "SETPOINT", 61.25, wait=True, timeout=30)
    expect(setpoint).to_have_text("61.25", timeout=LIVE)  # a CA write, shown through the PV gateway
    page.fill(f'[data-input="{MONITOR}SETPOINT"]', "42.5")
    page.press(f'[data-input="{MONITOR}SETPOINT"]', "Enter")
    expect(setpoint).to_have_text("42.50", timeout=LIVE)
    wait_for(lambda: ca.caget(MONITOR + "SETPOINT", timeout=3) == 42.5, timeout=15, what="the page's write over CA")
    page.fill(f'[data-input="{MONITOR}SETPOINT"]', "warm")  # not a number: refused by the page, said so
    page.press(f'[data-input="{MONITOR}SETPOINT"]', "Enter")
    expect(page.locator(f'[data-pv-row="{MONITOR}SETPOINT"] output')).to_contain_text("not a number")
    # a value past the HIGH limit shows its alarm colour (READING follows SETPOINT: HIGH, then HIHI)
    ca.caput(MONITOR + "SETPOINT", 95, wait=True, timeout=30)
    expect(page.locator(f'[data-pv="{MONITOR}READING"]')).to_have_attribute("data-severity", "2", timeout=30_000)
    ca.caput(MONITOR + "SETPOINT", 50, wait=True, timeout=30)
    assert "75.0" in page.locator("[data-config]").inner_text()  # the config.yaml it runs: threshold 75.0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-plugin.png"), full_page=True)


def test_the_log_follows_and_actions_show_their_outcome(admin_page: Page, daemon: Daemon) -> None:
    page = admin_page.open("/ui/plugins/temperature-monitor")
    log = page.locator("[data-log]")
    expect(log).to_contain_text("serving")
    served = log.inner_text().count("serving")
    page.evaluate("window.notReloaded = true")
    with daemon.client(token=ADMIN_TOKEN) as api:
        assert api.post("/plugins/temperature-monitor/restart").status_code == 200
    wait_for(lambda: log.inner_text().count("serving") > served, timeout=LIVE / 1000 + 10,
             what="the new worker's first lines in the followed log")
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("article")).to_have_attribute("data-state", "running")
    admin_page.refusals |= {409, 422}
    page.fill('[name="commit"]', "0" * 40)  # no such commit: the daemon's answer is shown, code and reason
    page.locator('[data-action="upgrade"]').click()
    outcome = page.locator("[data-upgrade-outcome]")
    expect(outcome).to_have_attribute("data-ok", "false", timeout=30_000)
    assert any(code in outcome.inner_text() for code in ("422", "409")), outcome.inner_text()
    page.fill('[name="upgrade-parameters"]', "[1, 2]")  # not an object: said by the page
    page.locator('[data-action="upgrade"]').click()
    expect(outcome).to_contain_text("not a JSON object")
    with page.expect_download() as saved:  # the panel, fetched with the token (a plain link has none)
        page.locator('[data-download="display"]').click()
    panel = Path(saved.value.path()).read_text()
    assert saved.value.suggested_filename == "temperature-monitor.bob"
    assert "<display" in panel and f"{MONITOR}READING" in panel


def test_delete_asks_first(admin_page: Page, daemon: Daemon) -> None:
    page = admin_page.page
    row = _row(page, "over-temperature-interlock")
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.locator('[data-action="delete"]').click()
    expect(row).to_have_attribute("data-state", "running")  # dismissed: nothing was asked of the daemon
    assert _state(daemon, "over-temperature-interlock") == "running"
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator('[data-action="delete"]').click()
    expect(row).to_have_count(0, timeout=30_000)
    with daemon.client(token=READ_TOKEN) as api:
        assert api.get("/plugins/over-temperature-interlock").status_code == 404


def test_tokens_gate_the_dashboard(browser: Any, daemon: Daemon) -> None:
    anonymous = Page(browser, daemon)
    page = anonymous.open("/ui/")
    expect(page.locator('[name="token"]')).to_be_focused()
    expect(page.locator("[data-plugin]")).to_have_count(0)
    anonymous.sign_in("not-" + READ_TOKEN)
    expect(page.locator('[role="alert"]')).to_contain_text("not recognised")
    expect(page.locator("[data-plugin]")).to_have_count(0)
    anonymous.close()

    reader = Page(browser, daemon)
    page = reader.open("/ui/")
    reader.sign_in(READ_TOKEN)
    expect(page.locator('tr[data-plugin="temperature-monitor"]')).to_be_visible()
    expect(page.locator("[data-action]")).to_have_count(0)  # looks, never acts
    page.reload()  # the token stays for the tab's session
    expect(page.locator('tr[data-plugin="temperature-monitor"]')).to_be_visible()
    page = reader.open("/ui/plugins/temperature-monitor")
    expect(page.locator(f'[data-pv="{MONITOR}SETPOINT"]')).not_to_be_empty()
    expect(page.locator("[data-action], [data-input], [data-write]")).to_have_count(0)
    reader.close()
    with httpx.Client(base_url=daemon.url + "/api/v1", timeout=10) as raw:  # the API holds the line, not the page
        assert raw.post("/plugins/beam-shutter/stop", headers=bearer(READ_TOKEN)).status_code == 403
        assert raw.get("/plugins/temperature-monitor/pvs").status_code == 401


def test_a_phone_sized_window_needs_no_sideways_scrolling(browser: Any, daemon: Daemon) -> None:
    phone = Page(browser, daemon, width=390, height=844)
    page = phone.open("/ui/")
    phone.sign_in(ADMIN_TOKEN)
    expect(page.locator('tr[data-plugin="temperature-monitor"]')).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    phone.close()


def test_the_page_is_small_self_contained_and_strict(daemon: Daemon) -> None:
    with httpx.Client(base_url=daemon.url, timeout=10) as raw:
        shell = raw.get("/ui/")
        assert shell.status_code == 200 and "text/html" in shell.headers["content-type"]
        csp = shell.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
        assert raw.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
        assets = ["/ui/assets/app.js", "/ui/assets/style.css", "/ui/assets/icon.svg"]
        sizes = [len(shell.content)] + [len(raw.get(path).content) for path in assets]
        assert all(size > 0 for size in sizes) and sum(sizes) < 500_000, sizes
        assert raw.get("/ui/assets/../app.py").status_code == 404
        assert "http://" not in shell.text.replace(daemon.url, "") and "https://" not in shell.text


def test_a_plugin_is_added_run_with_parameters_and_its_run_cancelled(admin_page: Page, daemon: Daemon,
                                                                      tmp_path: Path) -> None:
    page = admin_page.page
    admin_page.refusals.add(502)
    page.fill('[name="name"]', "slow")
    page.fill('[name="source"]', "file:///nowhere/such.git")
    page.locator('[data-action="add"]').click()
    outcome = page.locator("[data-add-outcome]")
    expect(outcome).to_have_attribute("data-ok", "false", timeout=30_000)  # the daemon's refusal, said
    assert "502 FETCH_FAILED" in outcome.inner_text() and "/nowhere/such.git" in outcome.inner_text()
    page.fill('[name="parameters"]', "{steps: 1}")  # not JSON: the page says so, asks nothing
    page.locator('[data-action="add"]').click()
    expect(outcome).to_contain_text("not JSON")
    repo = Repo(tmp_path / "slow").write({"slow.py": SLOW_JOB, "config.yaml": SLOW_JOB_CONFIG})
    repo.commit("a slow job")
    page.fill('[name="source"]', repo.url)
    page.fill('[name="parameters"]', '{"steps": 2}')
    page.locator("details summary").click()  # the rarer fields
    page.fill('[name="class_name"]', "Slow")
    page.fill('[name="grace_period"]', "3")
    page.uncheck('[name="auto_start_on_boot"]')
    page.locator('[data-action="add"]').click()
    expect(outcome).to_contain_text("added slow: running", timeout=60_000)
    expect(_row(page, "slow")).to_have_attribute("data-state", "running", timeout=LIVE)
    with daemon.client(token=READ_TOKEN) as api:
        startup = api.get("/jobs/slow/startup").json()
        assert api.get("/plugins/slow").json()["class_name"] == "Slow"
    assert (startup["auto_start_on_boot"], startup["start_parameters"]["steps"]) == (False, 2)

    page = admin_page.open("/ui/plugins/slow")
    page.fill('[name="run-parameters"]', '{"steps": 3000}')  # five minutes: only a cancel ends it soon
    page.press('[name="run-parameters"]', "Enter")
    running = page.locator('tr[data-run-state="running"]')
    expect(running).to_have_count(1, timeout=15_000)  # shown live, while the run's request waits
    running.locator('[data-action="cancel"]').click()
    expect(page.locator("[data-run-outcome]")).to_contain_text("run: cancelled", timeout=30_000)
    expect(page.locator('tr[data-run-state="cancelled"]')).to_have_count(1, timeout=LIVE)


# -- Firefox: Debian's firefox-esr, driven over Marionette (built into Firefox: no driver download) ----------
FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")


@pytest.fixture
def firefox(tmp_path: Path) -> Iterator[Any]:
    if FIREFOX is None and not os.environ.get("CI"):
        pytest.skip("Debian's firefox-esr is not installed (apt install firefox-esr)")
    assert FIREFOX is not None, "CI must have Debian's firefox-esr (.ci/run installs it)"
    from marionette_driver.marionette import Marionette

    port = free_port()
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "user.js").write_text(f'user_pref("marionette.port", {port});\n')
    browser = subprocess.Popen([FIREFOX, "--headless", "--marionette", "--no-remote", "--profile", str(profile)],
                               env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        driver = Marionette(host="127.0.0.1", port=port, startup_timeout=60)
        driver.start_session()
        yield driver
        driver.delete_session()
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait()


def test_firefox_shows_the_dashboard_live(firefox: Any, daemon: Daemon, ca: Any) -> None:
    """The same page in Firefox: sign in with the form, the overview, a REST stop shown without a
    reload, a plugin's PVs live and its log."""
    from marionette_driver.by import By

    def js(script: str) -> Any:
        return firefox.execute_script(script)

    firefox.navigate(daemon.url + "/ui/")
    wait_for(lambda: js("return !!document.querySelector('[name=token]')"), timeout=10, what="the token form")
    firefox.find_element(By.CSS_SELECTOR, '[name="token"]').send_keys(ADMIN_TOKEN + "\ue007")  # Enter
    wait_for(lambda: js("return document.querySelectorAll('tr[data-plugin]').length") >= 3, timeout=10,
             what="the plugins listed")
    js("document.body.dataset.notReloaded = 'yes'")  # in the DOM: a script's own globals stay in its sandbox
    with daemon.client(token=ADMIN_TOKEN) as api:
        assert api.post("/plugins/temperature-monitor/stop").status_code == 200
        state = "return document.querySelector('tr[data-plugin=\"temperature-monitor\"]').dataset.state"
        wait_for(lambda: js(state) == "stopped", timeout=LIVE / 1000, what="the stop, shown live")
        assert js("return document.body.dataset.notReloaded") == "yes"
        assert api.post("/plugins/temperature-monitor/start").status_code == 200
    firefox.navigate(daemon.url + "/ui/plugins/temperature-monitor")
    value = f"const e = document.querySelector('[data-pv=\"{MONITOR}SETPOINT\"]'); return e && e.textContent"
    wait_for(lambda: js(value), timeout=15, what="SETPOINT's value")
    ca.caput(MONITOR + "SETPOINT", 33.5, wait=True, timeout=30)  # libca reconnects to a restarted IOC in ~10 s
    wait_for(lambda: js(value) == "33.50", timeout=LIVE / 1000, what="a CA write, shown live")
    wait_for(lambda: "serving" in js("return document.querySelector('[data-log]').textContent"), timeout=10,
             what="the log")
