"""The web dashboard in a real browser: a real `swiftlet server` (QEMU unikernels), headless
Chromium from Debian driven by Selenium.

usage: run_ui.py SWIFTLET_BINARY HELLO_ELF [POSTGRES_URL]

Signs in (a wrong token is refused and shows no data), creates an instance from the page, watches
it become RUNNING, sees its phase waterfall and console, stops and deletes it; checks that markup
in console output and image properties is shown as text and never runs. Screenshots go to
.build/ui-artifacts/."""
import os, sys, time, urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "contract"))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import run as bench_run  # noqa: E402
from contract_server import ContractServer  # noqa: E402
from browser import chromium, screenshot, wait  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException, TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

binary, hello = sys.argv[1:3]
database = sys.argv[3] if len(sys.argv) > 3 else None
failures = []
# Markup a guest prints and an image carries: shown as text, it must never become elements or run.
CONSOLE_MARKUP = "<script>window.__xss=1</script><img/src=x/onerror=window.__xss=2>"
PROPERTY_MARKUP = '<img src=x onerror="window.__xss=3"><script>window.__xss=4</script>'


def check(condition, what):
    print(("ok   " if condition else "FAIL ") + what, flush=True)
    if not condition:
        failures.append(what)
    return condition


def call(server, method, path, body=None, raw=None, content_type="application/json"):
    """(status, parsed JSON answer) of one request with the admin token (bench/run.py's client)."""
    server.token = server.admin
    return bench_run.Server.call(server, method, path, body, raw, content_type)


def css(driver, selector):
    return driver.find_elements(By.CSS_SELECTOR, selector)


def row_state(driver, name):
    rows = css(driver, f'tr[data-name="{name}"]')
    return rows[0].get_attribute("data-state") if rows else None


def no_alert(driver):
    try:
        driver.switch_to.alert
        return False
    except NoAlertPresentException:
        return True


def script_ran(driver):
    return driver.execute_script("return window.__xss !== undefined") or not no_alert(driver)


def sign_in(driver, token):
    field = wait(driver, lambda d: d.find_element(By.ID, "token"))
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()


def signed_out_checks(driver, server):
    driver.get(server.base + "/ui/instances")
    wait(driver, lambda d: d.find_element(By.ID, "sign-in").is_displayed())
    check(not driver.find_element(By.ID, "page").is_displayed() and not css(driver, "#page *"),
          "no token: /ui/instances shows the sign-in page and no data")
    sign_in(driver, "not-a-token")
    error = wait(driver, lambda d: d.find_element(By.ID, "sign-in-error").is_displayed()
                 and d.find_element(By.ID, "sign-in-error"))
    check("refused" in error.text, f"a wrong token is refused on the sign-in page ({error.text!r})")
    check(not css(driver, "#page *") and not driver.find_element(By.ID, "nav").is_displayed(),
          "a wrong token shows no page, no navigation")
    screenshot(driver, "01-wrong-token")
    # A token kept in the tab that the server no longer takes: back to the sign-in, not the data.
    driver.execute_script("sessionStorage.setItem('swiftlet.token', 'stale-token')")
    driver.get(server.base + "/ui")
    wait(driver, lambda d: d.find_element(By.ID, "sign-in-error").is_displayed())
    check(not css(driver, "#page *"), "a stale token in the tab leads back to the sign-in")


def overview_checks(driver, server):
    sign_in(driver, server.admin)
    host = wait(driver, lambda d: css(d, ".host .bar > span") and css(d, ".host"), 30)[0]
    check(driver.find_element(By.ID, "nav").is_displayed(), "the admin token signs in")
    check("UP" in host.text and "vCPUs" in host.text and "Memory" in host.text,
          f"overview: a host card with its lease state and capacity bars ({host.text.splitlines()[:3]})")
    total = wait(driver, lambda d: css(d, '[data-count="total"]'))[0].text
    check(total == "1", f"overview: instances by state count the one instance there is ({total})")
    screenshot(driver, "02-overview")


def create_and_run(driver, server):
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-page="instances"]').click()
    form = wait(driver, lambda d: d.find_element(By.ID, "create-form"))
    form.find_element(By.ID, "create-name").send_keys("from-the-page")
    images = Select(driver.find_element(By.ID, "create-image"))
    images.select_by_index([o.text.startswith("hello ") for o in images.options].index(True))
    Select(driver.find_element(By.ID, "create-flavor")).select_by_value("tiny")
    created = time.monotonic()
    driver.find_element(By.ID, "create-submit").click()
    try:
        wait(driver, lambda d: row_state(d, "from-the-page") is not None, 30)
        check(True, "the instance created from the page appears in the list")
        wait(driver, lambda d: row_state(d, "from-the-page") == "RUNNING", 90)
        check(True, f"it becomes RUNNING on the page ({time.monotonic() - created:.1f} s after the click)")
    except TimeoutException:
        check(False, f"the instance created from the page becomes RUNNING (last: {row_state(driver, 'from-the-page')})")
    screenshot(driver, "03-instances")
    filter_box = driver.find_element(By.ID, "filter")
    filter_box.send_keys("xss")
    names = [r.get_attribute("data-name") for r in css(driver, "#instance-list tbody tr")]
    check(names == ["xss-console"], f"the filter keeps the matching instance only ({names})")
    filter_box.clear()
    filter_box.send_keys(" ")


def instance_page(driver, server):
    wait(driver, lambda d: css(d, 'tr[data-name="from-the-page"] a'))[0].click()
    try:
        wait(driver, lambda d: css(d, '#waterfall [data-phase="ready"]'), 30)
        phases = [e.get_attribute("data-phase") for e in css(driver, "#waterfall [data-phase]")]
        # In time order; on a loaded host "VMM up" (QMP answering) may come after the guest's READY.
        check(phases[0] == "accepted" and "ready" in phases and len(phases) >= 5,
              f"the instance page shows the boot-phase waterfall ({phases})")
    except TimeoutException:
        check(False, "the instance page shows the boot-phase waterfall up to guest READY")
    instance_id = driver.current_url.rsplit("/", 1)[1]
    _, shown = call(server, "GET", "/v1/instances/" + instance_id)
    timeline = shown["timeline"]
    page_total = driver.find_element(By.ID, "boot-total").text
    api_total = (timeline["ready"] - timeline["accepted"]) / 1e6
    check(page_total == f"{api_total:.1f} ms", f"its accepted → READY is the timeline's ({page_total} vs {api_total:.1f} ms)")
    try:
        # hello prints its READY line, then greets with its `name` (the instance's name by default).
        wait(driver, lambda d: "hello from from-the-page" in d.find_element(By.ID, "console").text, 30)
        check(True, "the live console shows the guest's output")
    except TimeoutException:
        check(False, f"the live console shows the guest's output ({driver.find_element(By.ID, 'console').text!r})")
    check(css(driver, "#events tbody tr") != [], "its events are listed")
    check("No migrations" in driver.find_element(By.ID, "migrations").text, "its migrations section says none")
    screenshot(driver, "04-instance")
    return instance_id


def stop_and_delete(driver, server, instance_id):
    wait(driver, lambda d: css(d, 'button[data-action="stop"]'))[0].click()
    try:
        wait(driver, lambda d: d.find_element(By.ID, "state").text == "STOPPED", 30)
        check(True, "Stop on the page: the instance becomes STOPPED")
    except TimeoutException:
        check(False, f"Stop on the page: STOPPED (last {driver.find_element(By.ID, 'state').text})")
    screenshot(driver, "05-stopped")
    delete = wait(driver, lambda d: css(d, 'button[data-action="delete"]'))[0]
    delete.click()
    check(delete.text == "Confirm delete", "Delete asks for a confirmation on the same button")
    delete.click()
    try:
        wait(driver, lambda d: "Instance deleted" in d.find_element(By.ID, "page").text, 30)
        check(True, "Delete on the page: the page says the instance is gone")
    except TimeoutException:
        check(False, "Delete on the page: the page says the instance is gone")
    status, _ = call(server, "GET", "/v1/instances/" + instance_id)
    check(status == 404, f"the API no longer has it ({status})")


def markup_checks(driver, server, xss_id):
    driver.get(server.base + "/ui/instances/" + urllib.parse.quote(xss_id))
    try:
        wait(driver, lambda d: CONSOLE_MARKUP in d.find_element(By.ID, "console").text, 60)
        check(True, "markup printed on the console is shown as text")
    except TimeoutException:
        check(False, f"the console shows the markup as text ({driver.find_element(By.ID, 'console').text!r})")
    check(not css(driver, "#console *"), "the console holds no element made from its output")
    time.sleep(1.5)
    check(not script_ran(driver), "no script from the console ran (window.__xss unset, no alert)")
    screenshot(driver, "06-console-markup")
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-page="images"]').click()
    cell = wait(driver, lambda d: [c for c in css(d, "#images-list td") if "note=" in c.text])
    check(PROPERTY_MARKUP in cell[0].text, "markup in an image property is shown as text")
    check(not css(driver, "#images-list img, #images-list script"), "the images table holds no element made from it")
    time.sleep(1)
    check(not script_ran(driver), "no script from the image property ran")
    screenshot(driver, "07-images-markup")
    violations = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    check(violations == [], f"the browser reported no blocked script (no markup reached the DOM): {violations[:2]}")


def main():
    started = time.monotonic()
    with ContractServer(binary, database) as server:
        query = urllib.parse.urlencode([("name", "hello"), ("property", "note=" + PROPERTY_MARKUP)],
                                       quote_via=urllib.parse.quote)
        status, image = call(server, "POST", "/v1/images?" + query, raw=open(hello, "rb").read(),
                             content_type="application/octet-stream")
        check(status == 201, f"image hello uploaded with markup in a property ({status})")
        status, made = call(server, "POST", "/v1/instances",
                            {"name": "xss-console", "image": "hello", "flavor": "tiny",
                             "args": ["name=" + CONSOLE_MARKUP], "wait": True})
        check(status == 201, f"an instance whose console prints markup ({status}: {str(made)[:200]})")
        xss_id = made["instances"][0]["id"] if status == 201 else ""
        driver = chromium()
        try:
            signed_out_checks(driver, server)
            overview_checks(driver, server)
            create_and_run(driver, server)
            instance_id = instance_page(driver, server)
            stop_and_delete(driver, server, instance_id)
            markup_checks(driver, server, xss_id)
            for name, path in [("08-hosts", "/ui/hosts"), ("09-networks", "/ui/networks")]:
                driver.get(server.base + path)
                wait(driver, lambda d: css(d, "#page table, #page .empty"))
                screenshot(driver, name)
            check(css(driver, "#page .empty") != [] or css(driver, "#page table") != [], "hosts and networks pages draw")
        except Exception as error:  # a step that broke: its screen is the clue
            screenshot(driver, "failure")
            check(False, f"the browser run broke: {type(error).__name__}: {error}")
        finally:
            driver.quit()
        call(server, "DELETE", "/v1/instances/" + xss_id)
    check(server.left_vmms == [], f"no VMM left behind ({server.left_vmms})")
    print(f"{len(failures)} failure(s) in {time.monotonic() - started:.1f} s; screenshots in .build/ui-artifacts/")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
