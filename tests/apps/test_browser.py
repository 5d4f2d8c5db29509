"""The web demo in a real headless browser (Debian's chromium through selenium): the page loads with a tab per
task, a sentence typed into the sentiment tab and a click on "classify" show the label the Python API gives, and
the captioning tab draws a scene and captions it. Needs `make browser` (apt: chromium, chromium-driver)."""
import os
import shutil
import socket
import time

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytest.importorskip("gradio", reason="the serve extra: pip install -e '.[serve]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra)")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("no chromium/chromedriver: `make browser` installs Debian's (apt, as root)", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from apps.serve import build_app, load_predictors  # noqa: E402


@pytest.fixture(scope="module")
def page():
    predictors = load_predictors()
    app = build_app({task: predictors[task] for task in ("captioning", "sentiment")})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "button[role=tab]"))
        yield driver, predictors
    finally:
        driver.quit()
        app.close()


def open_tab(driver, name):
    tabs = driver.find_elements(By.CSS_SELECTOR, "button[role=tab]")
    assert [t.text for t in tabs] == ["captioning", "sentiment"]
    next(t for t in tabs if t.text == name).click()
    time.sleep(0.5)


def visible(driver, css):
    return [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]


def click(driver, text):
    next(b for b in visible(driver, "button") if b.text == text).click()


def test_sentiment_tab_in_a_browser(page):
    driver, predictors = page
    open_tab(driver, "sentiment")
    box = visible(driver, "textarea")[0]
    box.clear()
    box.send_keys("dull, tedious and far too long")
    click(driver, "classify")
    expected = predictors["sentiment"].predict("dull, tedious and far too long")
    shown = lambda d: [e.text for e in visible(d, "[data-testid=label-output-value]")]  # noqa: E731
    WebDriverWait(driver, 60).until(lambda d: shown(d) == [expected["label"]])
    assert expected["label"] == "negative"


def test_captioning_tab_in_a_browser(page):
    driver, _ = page
    open_tab(driver, "captioning")
    click(driver, "draw a generated scene")
    WebDriverWait(driver, 60).until(lambda d: visible(d, "img"))
    click(driver, "caption")
    caption = lambda d: [b.get_attribute("value") for b in visible(d, "textarea")]  # noqa: E731
    WebDriverWait(driver, 60).until(lambda d: any(len((v or "").split()) >= 3 for v in caption(d)))
