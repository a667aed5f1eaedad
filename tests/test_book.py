"""The book as readers meet it: build the HTML, open every page in headless Chromium.

The build runs offline with warnings as errors. Each page listed in _toc.yml is served from
a localhost HTTP server and opened in Debian's `chromium` (driven by Playwright, never a
downloaded browser); a page fails on

- a console error or an uncaught exception, or any request that leaves localhost
  (the book must work offline: MathJax and every asset come from _static);
- raw TeX in the text (`$$`, `\\frac`, ...) outside MathJax's output, i.e. math that did
  not render, or unparsed MyST (`:::`, `{dropdown}`, `{cite}` shown as text);
- a broken image (naturalWidth 0);
- a widget with no static figure in its section (widgets do not run in the HTML book);
- an Exercises section without its solutions in closed `{dropdown}`s;
- on a chapter (notebooks/*): a missing Colab launch button;
- on the results chapters (05_single_task, 09_results): a missing results table.

Screenshots go to screenshots/ (gitignored); one page is copied to
book/_static/book-screenshot.png for the README when that file is missing or
MINBERT_README_SCREENSHOT=1.

To reuse a build made earlier in the same run (CI does), set MINBERT_BOOK_HTML to its
html folder; otherwise the test builds the book into a temporary folder.
Skips, saying why, where Chromium or Playwright is absent; .ci/run installs both.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MINBERT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
REPO = "minbert-book/minbert-book"
RESULTS_CHAPTERS = {"notebooks/05_single_task", "notebooks/09_results"}
README_SCREENSHOT = ROOT / "book" / "_static" / "book-screenshot.png"
README_PAGE_PREFERENCE = ["notebooks/02_attention", "notebooks/01_data", "intro"]

# TeX that must never be visible as text once MathJax has run.
RAW_TEX = re.compile(
    r"\$\$|\\\[|\\\(|\\(?:frac|sum|mathcal|mathbf|mathrm|begin|end|theta|lambda|epsilon|"
    r"sqrt|left|right|cdot|top|operatorname|text|tilde|hat|quad|log|exp|max|min)\b"
)
# MyST that was not parsed: a colon fence, a directive or a role shown as text.
RAW_MYST = re.compile(r"(^|\s):::|\{(?:dropdown|cite|cite:p|cite:t|doc|eq|math|ref|numref|bibliography|figure)\}")


def toc_pages() -> list[str]:
    """Every page of the book, in _toc.yml order (root first)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return pages


PAGES = toc_pages()


def _skip_without_browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: install Debian's chromium "
                    "(apt-get install chromium; .ci/run does) or set MINBERT_CHROMIUM")
    pytest.importorskip("playwright.sync_api", reason="playwright (requirements.txt) is not installed")


def build_book(out: Path) -> Path:
    """`jupyter-book build book/` offline, warnings as errors, into `out`; the html folder."""
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", "book/",
           "--path-output", str(out), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"book build failed ({' '.join(cmd)}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory) -> Path:
    given = os.environ.get("MINBERT_BOOK_HTML")
    if given:
        html = Path(given).resolve()
        assert (html / "index.html").exists(), f"MINBERT_BOOK_HTML={given} holds no built book"
        return html
    return build_book(tmp_path_factory.mktemp("book"))


def test_book_builds_and_lists_every_page(html_dir):
    for page in PAGES:
        assert (html_dir / f"{page}.html").exists(), f"{page} is in _toc.yml but was not built"


def test_chapters_are_committed_with_outputs():
    """The book renders the committed outputs (execute_notebooks: off): a chapter must have them."""
    for page in PAGES:
        if not page.startswith("notebooks/"):
            continue
        nb = json.loads((ROOT / f"{page}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert any(c.get("outputs") for c in code), (
            f"{page}.ipynb has no outputs: execute it (jupyter nbconvert --to notebook --execute --inplace) "
            "before listing it in _toc.yml")
        lexer = nb["metadata"].get("language_info", {}).get("pygments_lexer")
        assert lexer == "ipython3", f"{page}.ipynb: language_info.pygments_lexer is {lexer!r}, not 'ipython3' " \
            "(the first cell's !pip then breaks the build); executing the notebook sets it"


def test_chapter_code_fits_the_page_width():
    """STYLE.md: the book's code column shows about 88 characters; a longer line scrolls
    sideways and hides its end. A shell line (the Colab install's URL) cannot be wrapped."""
    for page in PAGES:
        if not page.startswith("notebooks/"):
            continue
        nb = json.loads((ROOT / f"{page}.ipynb").read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            for line in "".join(cell["source"]).splitlines():
                assert len(line) <= 88 or line.lstrip().startswith("!"), (
                    f"{page}.ipynb cell {i}: a {len(line)}-character line (wrap it at 88, "
                    f"black -l 88): {line.strip()[:60]}")


def test_mathjax_is_served_locally(html_dir):
    """Math must render offline: MathJax comes from _static, never from a CDN."""
    with_math = []
    for page in PAGES:
        html = (html_dir / f"{page}.html").read_text()
        srcs = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', html, flags=re.I)
        for src in srcs:
            assert "_static/mathjax/" in src and "://" not in src, f"{page}: MathJax loaded from {src}"
        with_math += [page] if srcs else []
    assert "intro" in with_math, "the intro has an equation, yet its page loads no MathJax"
    assert (html_dir / "_static" / "mathjax" / "tex-chtml.js").exists()


@pytest.fixture(scope="module")
def server(html_dir):
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    _skip_without_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    d = ROOT / "screenshots"
    d.mkdir(exist_ok=True)
    return d


# Runs in the page: text outside MathJax output, code and scripts.
VISIBLE_TEXT_JS = """
() => {
  const root = document.querySelector('article') || document.body;
  const skip = 'mjx-container, script, style, pre, code, .highlight, textarea, .MathJax';
  const out = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip)) continue;
    if (n.textContent.trim()) out.push(n.textContent);
  }
  return out;
}
"""

BROKEN_IMAGES_JS = """
async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return imgs.filter(i => !i.complete || i.naturalWidth === 0)
             .map(i => (i.currentSrc || i.src || '(no src)').slice(0, 120));
}
"""

# A widget does not run in the static book: minbert-widgets.js turns progress bars into static
# bars and every other widget into a note, which needs a figure in its section (or the one around).
WIDGETS_WITHOUT_FIGURE_JS = """
() => {
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  const standIns = document.querySelectorAll('.mb-widget-note, .mb-widget-progress');
  if (standIns.length !== views.length) return views.length - standIns.length;
  return Array.from(document.querySelectorAll('.mb-widget-note')).filter(w => {
    const inner = w.closest('section');
    const outer = inner && inner.parentElement ? inner.parentElement.closest('section') : null;
    return ![inner, outer].some(sec => sec && sec.querySelector('.cell_output img'));
  }).length;
}
"""

MATHJAX_READY_JS = """
async () => {
  if (!window.MathJax) return {loaded: false, rendered: 0, raw: document.querySelectorAll('.math').length};
  for (let i = 0; i < 200 && !(MathJax.startup && MathJax.startup.promise); i++)
    await new Promise(r => setTimeout(r, 50));
  const loaded = !!(MathJax.startup && MathJax.startup.promise);
  if (loaded) await MathJax.startup.promise;
  return {loaded: loaded, rendered: document.querySelectorAll('mjx-container').length,
          raw: document.querySelectorAll('.math').length};
}
"""


@pytest.mark.parametrize("page", PAGES)
def test_page_in_browser(page, browser, server, screenshots):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    problems: list[str] = []
    external: list[str] = []

    def route(r):
        url = r.request.url
        if url.startswith(server) or url.startswith("data:") or url.startswith("blob:"):
            r.continue_()
        else:
            external.append(url)
            r.abort()

    context.route("**/*", route)
    tab = context.new_page()
    tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(f"uncaught exception: {e}"))
    tab.on("requestfailed", lambda r: None if r.url in external else problems.append(f"request failed: {r.url} ({r.failure})"))
    try:
        response = tab.goto(f"{server}/{page}.html", wait_until="load", timeout=60_000)
        assert response is not None and response.ok, f"{page}: HTTP {response.status if response else 'no response'}"
        math = tab.evaluate(MATHJAX_READY_JS)
        tab.wait_for_timeout(300)  # let late console errors arrive
        name = page.replace("/", "__")
        tab.screenshot(path=str(screenshots / f"{name}.png"))
        tab.screenshot(path=str(screenshots / f"{name}.full.png"), full_page=True)

        if math["raw"] and not math["rendered"]:
            problems.append(f"math did not render: {math['raw']} math elements, 0 typeset (MathJax loaded: {math['loaded']})")
        texts = tab.evaluate(VISIBLE_TEXT_JS)
        raw = [t.strip()[:100] for t in texts if RAW_TEX.search(t)]
        if raw:
            problems.append(f"raw TeX visible in the text: {raw[:5]}")
        myst = [t.strip()[:100] for t in texts if RAW_MYST.search(t)]
        if myst:
            problems.append(f"unparsed MyST visible in the text (a directive or role): {myst[:5]}")
        broken = tab.evaluate(BROKEN_IMAGES_JS)
        if broken:
            problems.append(f"broken images: {broken}")
        if page.startswith("notebooks/"):
            colab = f"colab.research.google.com/github/{REPO}/blob/main/{page}.ipynb"
            if tab.locator(f'a[href*="{colab}"]').count() == 0:
                problems.append(f"no Colab launch button linking to {colab}")
        exercises = tab.evaluate(
            "() => { const s = document.querySelector('section#exercises');"
            " return s ? {solutions: s.querySelectorAll('details.sd-dropdown').length,"
            " open: s.querySelectorAll('details.sd-dropdown[open]').length} : null; }"
        )
        if exercises is not None and (not exercises["solutions"] or exercises["open"]):
            problems.append(f"exercises need their solutions in closed dropdowns: {exercises}")
        lonely = tab.evaluate(WIDGETS_WITHOUT_FIGURE_JS)
        if lonely:
            problems.append(f"{lonely} widget(s) without a static stand-in, or with no static figure in their "
                            "section (widgets do not run in the HTML book)")
        if page in RESULTS_CHAPTERS:
            tables = tab.evaluate(
                "() => Array.from(document.querySelectorAll('article table'))"
                ".filter(t => t.querySelectorAll('tr').length >= 3 && /sst/i.test(t.innerText)).length"
            )
            if not tables:
                problems.append("no results table (an HTML table with SST results) on a results chapter")
        if external:
            problems.append(f"requests leaving localhost (the book must work offline): {sorted(set(external))[:5]}")
        if page == _readme_page():
            # For the README: the first section, where prose, an equation and code meet.
            tab.evaluate("() => { const h = document.querySelector('article section section h2, article h2');"
                         " if (h) window.scrollTo(0, h.getBoundingClientRect().top + window.scrollY - 72); }")
            tab.wait_for_timeout(200)
            tab.screenshot(path=str(screenshots / "readme.png"))
            if not README_SCREENSHOT.exists() or os.environ.get("MINBERT_README_SCREENSHOT") == "1":
                shutil.copyfile(screenshots / "readme.png", README_SCREENSHOT)
    finally:
        context.close()
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


def _readme_page() -> str:
    return next((p for p in README_PAGE_PREFERENCE if p in PAGES), PAGES[0])
