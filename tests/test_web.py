"""The web demo in a real browser: Debian's Chromium driven by Playwright, against the real
server. Type a prompt, watch the output stream in, flag it, find the flag in the export."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import cli
from tests.test_serve import running_server

pytestmark = [pytest.mark.integration, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    with running_server(tmp, {"ALPACA_JOBS_API_KEYS": "web-test-key"}) as base:
        yield base, tmp


def test_prompt_stream_flag_export(site):
    from playwright.sync_api import expect, sync_playwright

    base, tmp = site
    assert os.path.exists(CHROMIUM), "Debian's chromium is needed (apt-get install chromium)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.goto(base + "/")
        page.fill("#apikey", "web-test-key")
        page.fill("#prompt", "Give three tips for staying healthy.")
        page.fill("#max_tokens", "48")
        page.click("#generate")
        # Streaming: text appears while the request is still running, then it finishes.
        # (Locators, not wait_for_function: the page's CSP rightly forbids eval.)
        expect(page.locator("#output")).not_to_have_text("", timeout=120_000)
        partial = page.text_content("#output")
        expect(page.locator("#status")).to_contain_text("done", timeout=120_000)
        final = page.text_content("#output")
        assert final.startswith(partial) and len(final) >= len(partial) > 0
        page.fill("#reason", "not helpful enough")
        page.click("#flag")
        expect(page.locator("#flagged")).to_contain_text("flagged", timeout=30_000)
        page.fill("#wmtext", final)
        page.click("#check")
        expect(page.locator("#wmresult")).to_contain_text("z =", timeout=30_000)
        browser.close()
    rows = [json.loads(x) for x in cli("flags", "export", "--flags-db", str(tmp / "flags.sqlite3")).stdout.splitlines()]
    assert rows and rows[-1]["reason"] == "not helpful enough"
    assert rows[-1]["output"] == final and rows[-1]["prompt"] == "Give three tips for staying healthy."
    assert rows[-1]["params"]["max_tokens"] == 48
