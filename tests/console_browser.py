"""The web console in a real browser: Playwright driving Debian's Chromium, headless.

Started by tests/console.rs with the populated registry's address and what it holds (one JSON
argument); exits non-zero, naming what failed, when a check fails. Every page is visited with
JavaScript on and checked for console errors, page errors and failed requests; screenshots of
each go to the plan's `out` directory. Then: the hostile annotations run no script, the denial
line equals the API's, a user without pull rights on prod cannot reach it by URL, and the login
form, the pages and the sign-out work with JavaScript off.
"""

import base64
import json
import pathlib
import sys
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

plan = json.loads(sys.argv[1])
base = plan["base_url"]
out = pathlib.Path(plan["out"])
out.mkdir(parents=True, exist_ok=True)
failures = []
shots = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAILED:", what, flush=True)


def api_json(path, user):
    request = urllib.request.Request(base + path)
    credentials = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    request.add_header("Authorization", "Basic " + credentials)
    with urllib.request.urlopen(request) as response:
        return json.load(response)


class Watched:
    """A page whose console errors, page errors and failed requests are collected."""

    def __init__(self, context):
        self.page = context.new_page()
        self.problems = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))

    def visit(self, path, name, status=200):
        self.problems.clear()
        response = self.page.goto(base + path)
        self.page.wait_for_load_state("networkidle")
        check(response is not None and response.status == status, f"{name}: GET {path} answered {response and response.status}, expected {status}")
        # An error page (the expected 404) logs its status as a console error; nothing else may.
        problems = [p for p in self.problems if not (status != 200 and "status of 404" in p)]
        check(not problems, f"{name}: {problems}")
        shot = out / f"{name}.png"
        self.page.screenshot(path=str(shot), full_page=True)
        shots.append(shot)
        return response


def sign_in(watched, user, js=True):
    page = watched.page
    page.goto(base + "/ui/login?next=/ui/repositories")
    page.fill("input[name=username]", user[0])
    page.fill("input[name=password]", user[1])
    page.click("button[type=submit]")
    page.wait_for_url(base + "/ui/repositories")
    check(page.locator(".who span").inner_text() == user[0], f"signed in as {user[0]} (js={js})")


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=plan["chromium"], args=CHROMIUM_ARGS)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    admin = Watched(context)
    admin.visit("/ui/login", "login")
    sign_in(admin, plan["admin"])
    cookie = [c for c in context.cookies() if c["name"] == "portcullis_session"]
    check(len(cookie) == 1 and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Strict", f"session cookie {cookie}")

    pages = [
        ("/ui/repositories", "repositories"),
        ("/ui/repositories?q=build/", "repositories-search"),
        ("/ui/repositories?q=app&match=contains", "repositories-contains"),
        ("/ui/r/build/app", "repository-build"),
        ("/ui/r/prod/app", "repository-prod"),
        ("/ui/r/staging/app", "repository-staging"),
        (f"/ui/r/prod/app/@{plan['promoted']}", "image-promoted"),
        (f"/ui/r/staging/app/@{plan['denied']}", "image-denied-admin"),
        (f"/ui/r/build/multi/@{plan['index']}", "image-index"),
        (f"/ui/r/build/hostile/@{plan['hostile']}", "image-hostile"),
        ("/ui/promotions", "promotions"),
        ("/ui/audit", "audit"),
    ]
    for path, name in pages:
        admin.visit(path, name)
    page = admin.page

    # The promoted image passed, with its signer's identity; the index lists both platforms.
    admin.visit(f"/ui/r/prod/app/@{plan['promoted']}", "image-promoted")
    check(page.locator("#verdict-badge").inner_text() == "passed", "the promoted image passed")
    check("ci" in page.locator("table.requirements").inner_text(), "the requirements name the trust entry")
    admin.visit(f"/ui/r/build/multi/@{plan['index']}", "image-index")
    platforms = page.locator("table.platforms").inner_text()
    check("linux/amd64" in platforms and "linux/arm64" in platforms, f"platforms: {platforms}")

    # The hostile annotations are text, and ran nothing.
    admin.visit(f"/ui/r/build/hostile/@{plan['hostile']}", "image-hostile")
    check(page.evaluate("window.__xss") is None, "a hostile annotation ran script")
    check("<script>window.__xss = 1</script>" in page.locator("table.annotations").inner_text(), "the annotation is shown as text")

    # The copy button appears with JavaScript and copies the digest.
    admin.visit("/ui/r/build/app", "repository-build")
    button = page.locator("button.copy").first
    check(button.is_visible(), "copy buttons show with JavaScript")
    button.click()
    check(button.inner_text() in ("copied", "selected"), f"copy button said {button.inner_text()}")

    # Signing out ends the session.
    page.click("header .who button")
    page.wait_for_url(base + "/ui/login")
    check(not [c for c in context.cookies() if c["name"] == "portcullis_session" and c["value"]], "signed out")
    context.close()

    # A user without pull rights on prod, with JavaScript off: the login form, the lists, and
    # prod refused by URL too; the denial line equals the API's and a pull's.
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    dev = Watched(context)
    sign_in(dev, plan["dev"], js=False)
    dev.visit("/ui/repositories", "dev-repositories")
    listed = dev.page.locator("table.repositories").inner_text()
    check("build/app" in listed and "prod/app" not in listed, f"dev's repositories: {listed}")
    check(not dev.page.locator("button.copy").first.is_visible() if dev.page.locator("button.copy").count() else True, "no copy buttons without JavaScript")
    dev.visit("/ui/r/prod/app", "dev-prod-repository", status=404)
    dev.visit(f"/ui/r/prod/app/@{plan['promoted']}", "dev-prod-image", status=404)
    check(plan["promoted"] not in dev.page.content(), "the 404 names nothing of prod")
    dev.visit(f"/ui/r/staging/app/@{plan['denied']}", "image-denied")
    denial = dev.page.locator("#denial").inner_text()
    api = api_json(f"/api/v1/verdict?image=staging/app@{plan['denied']}", plan["dev"])
    check(denial == api["summary"] == plan["summary"], f"denial line {denial!r} vs API {api['summary']!r}")
    check(plan["denied_layer"] not in dev.page.content(), "the denied image's layers are withheld")
    dev.visit("/ui/r/staging/app", "dev-repository-staging")
    check(dev.page.locator(".badge.denied").count() >= 1, "the denied tag has a denied badge")
    dev.page.click("header .who button")
    dev.page.wait_for_url(base + "/ui/login")
    context.close()
    browser.close()

print("screenshots:")
for shot in sorted(set(shots)):
    print(f"  {shot}")
if failures:
    print(f"{len(failures)} browser checks failed", flush=True)
    sys.exit(1)
print("browser checks passed")
