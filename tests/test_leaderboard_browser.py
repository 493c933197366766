"""The leaderboard page in a real browser (Debian's headless Chromium through its
ChromeDriver): every entry is shown, sorting by a column reorders the rows, a defense
expands to its cells with the worst case highlighted, and the screenshot is drawn.
`.ci/run` installs Chromium where it is missing; elsewhere the test skips."""

import shutil

import pytest

from bench.harness.reporting.board import build_board
from bench.harness.reporting.board_html import screenshot
from bench.harness.reporting.leaderboard import write_board
from bench.harness.reporting.runs import read_run
from tests.test_leaderboard import synthetic_rows, write_run

webdriver = pytest.importorskip("selenium.webdriver")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="Chromium and ChromeDriver not installed "
                                                                        "(apt-get install chromium chromium-driver)")


@pytest.fixture
def board_page(tmp_path):
    rows = synthetic_rows(seed=5, skip={("b", "attgan", "lora", "leakage")}, linf={"c": 0.07})
    board = build_board([read_run(write_run(tmp_path / "run", rows, {"a": 0.05, "b": 0.05, "c": 0.05}))])
    write_board(board, tmp_path / "board")
    return board, tmp_path / "board" / "leaderboard.html"


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def shown_names(driver, table="defenses"):
    return [body.get_attribute("data-name") for body in
            driver.find_elements("css selector", f"#{table} tbody.entry")]


def header(driver, text, table="defenses"):
    return next(th for th in driver.find_elements("css selector", f"#{table} thead th") if th.text.startswith(text))


def test_the_page_shows_every_entry_and_sorts_by_a_clicked_column(board_page, browser):
    board, page = board_page
    browser.get(page.as_uri())
    assert sorted(shown_names(browser)) == sorted(e.label for e in board.entries)
    assert len(shown_names(browser, "bypasses")) == len(board.columns)
    assert "protocol " + board.protocol_id in browser.find_element("id", "protocol").text

    by_linf = sorted(board.entries, key=lambda e: e.budget["linf_max"])
    header(browser, "L-inf measured").click()
    assert shown_names(browser)[-1] == by_linf[-1].label == "c"  # the entry over budget, largest L-inf
    by_mean = sorted(board.entries, key=lambda e: -e.robust_dsr)
    header(browser, "mean robust DSR").click()  # first click: highest first
    assert shown_names(browser) == [e.label for e in by_mean]
    header(browser, "mean robust DSR").click()
    assert shown_names(browser) == [e.label for e in reversed(by_mean)]
    header(browser, "defense").click()
    assert shown_names(browser) == sorted(e.label for e in board.entries)


def test_a_defense_expands_to_its_cells_with_the_worst_case_highlighted(board_page, browser):
    board, page = board_page
    browser.get(page.as_uri())
    body = browser.find_element("css selector", '#defenses tbody.entry[data-name="a"]')
    detail = body.find_element("css selector", "tr.detail")
    assert not detail.is_displayed()
    body.find_element("css selector", "tr.main").click()
    assert detail.is_displayed()
    worst = detail.find_elements("css selector", "td.worst")
    entry = next(e for e in board.entries if e.label == "a")
    assert sorted(float(td.text) for td in worst) == sorted(round(w["dsr"], 3) for w in entry.worst.values())
    flagged = browser.find_element("css selector", '#defenses tbody.entry[data-name="c"] tr.main')
    assert "flagged" in flagged.get_attribute("class") and "over budget" in flagged.text


def test_the_screenshot_shows_the_page(board_page, tmp_path):
    from PIL import Image

    _, page = board_page
    png = screenshot(page, tmp_path / "board.png", fragment="a", size=(1200, 900))
    image = Image.open(png).convert("L")
    assert image.size == (1200, 900)
    assert image.getextrema()[0] < 80  # dark text drawn on the white page
