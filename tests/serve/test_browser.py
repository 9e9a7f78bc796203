"""The web page in headless Chromium (Debian's package, driven by Playwright): upload, overlay, legend, download.

Skipped only when /usr/bin/chromium or Playwright is missing; CI installs both (see .ci/run).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from fcnseg.transforms import palette

CHROMIUM = os.environ.get("FCNSEG_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)), reason=f"no Chromium at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def page_url(segmenter, helpers):
    from fcnseg.serve import create_app

    with helpers.live_server(create_app(segmenter, config=helpers.config(max_batch=1))) as url:
        yield url


def on_this_server(urls: list[str], base: str) -> list[str]:
    """The requested URLs that went anywhere but ``base`` (data: and blob: URLs stay in the page)."""
    return [u for u in urls if not u.startswith((base + "/", "data:", "blob:"))]


def test_upload_overlay_legend_download(page_url, segmenter, helpers, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    image = helpers.make_image(5, (80, 56))
    photo = tmp_path / "street.png"
    image.save(photo)
    want = segmenter.predict(image)
    assert len(want.class_stats()) >= 2  # so the legend and the blending below are not vacuous

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            failed: list[str] = []
            page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
            page.goto(page_url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('3 classes')")

            # before any upload: no result panel (no broken image, empty legend or dead download link)
            page.screenshot(path=str(tmp_path / "before_upload.png"), full_page=True)
            assert not page.is_visible("#result") and not page.is_visible("#photo")
            assert page.eval_on_selector("#result", "e => getComputedStyle(e).display") == "none"
            assert page.is_visible("#drop") and page.text_content("#status") == ""

            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#overlay[data-ready='true']", timeout=60_000)
            page.screenshot(path=str(tmp_path / "after_upload.png"), full_page=True)
            assert page.is_visible("#result") and page.is_visible("#overlay") and page.is_visible("#legend")
            assert page.eval_on_selector("#result", "e => getComputedStyle(e).display") == "flex"

            # legend: the classes present, largest first, with their area share
            rows = page.locator("#legend li")
            names = rows.locator(".name").all_text_contents()
            areas = rows.locator(".area").all_text_contents()
            expected = want.class_stats()
            assert names == [s["name"] for s in expected]
            assert areas == [f"{s['share'] * 100:.1f}%" for s in expected]

            # the overlay canvas shows the photo with the mask blended on top, at the photo's size
            size = page.evaluate("(c => [c.width, c.height])(document.getElementById('overlay'))")
            assert size == [80, 56]

            def canvas() -> np.ndarray:
                url = page.evaluate("document.getElementById('overlay').toDataURL('image/png')")
                return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))

            rgb = np.asarray(image, dtype=np.int32)
            page.fill("#opacity", "0")
            page.dispatch_event("#opacity", "input")
            assert np.abs(canvas().astype(np.int32) - rgb).max() <= 1  # opacity 0: just the photo
            page.fill("#opacity", "1")
            page.dispatch_event("#opacity", "input")
            full = canvas()
            fg = want.mask != 0  # opacity 1: class colours wherever the class is not background
            if fg.any():
                assert np.abs(full[fg].astype(np.int32) - palette(3)[want.mask[fg]]).max() <= 1
            assert np.abs(full[~fg].astype(np.int32) - rgb[~fg]).max() <= 1

            # the download link holds the mask in class colours, decoded in the page from the COCO RLEs
            href = page.get_attribute("#download", "href")
            mask = Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).convert("RGB")
            assert np.array_equal(np.asarray(mask), palette(3)[want.mask])
            assert page.get_attribute("#download", "download") == "street_mask.png"

            # drag and drop works like the file picker
            b64 = base64.b64encode(helpers.encode(image)).decode()
            transfer = page.evaluate_handle(
                """(b64) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    const dt = new DataTransfer();
                    dt.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
                    return dt;
                }""",
                b64,
            )
            page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
            page.wait_for_function("document.getElementById('download').download === 'dropped_mask.png'")
            page.wait_for_selector("#overlay[data-ready='true']")
            assert rows.locator(".name").all_text_contents() == [s["name"] for s in expected]

            # a bad file shows the server's error message instead of breaking the page
            bad = tmp_path / "notes.png"
            bad.write_bytes(b"not really a png")
            page.set_input_files("#file", str(bad))
            page.wait_for_function("document.getElementById('status').classList.contains('error')")
            status = page.text_content("#status")
            assert "400" in status and re.search(r"\(request [0-9a-f]{16}\)", status)
            assert errors == [] and on_this_server(requests, page_url) == []
            assert [u for u in failed if not u.endswith("/v1/segment?format=json")] == []
        finally:
            browser.close()


def test_page_asks_for_the_api_key(segmenter, helpers, tmp_path):
    """A server with a key: the page asks for it, a wrong key is refused, the right one segments."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from fcnseg.serve import create_app

    image = helpers.make_image(6, (40, 32))
    photo = tmp_path / "p.png"
    image.save(photo)
    app = create_app(segmenter, config=helpers.config(max_batch=1, api_key="s3cret-key"))
    with helpers.live_server(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_selector("#auth", state="visible")
            page.fill("#api-key", "wrong")
            page.click("#auth button")
            page.wait_for_function("document.getElementById('auth-message').textContent.includes('needs')")
            assert page.is_visible("#auth") and "classes" not in page.text_content("#model")
            page.fill("#api-key", "s3cret-key")
            page.click("#auth button")
            page.wait_for_function("document.getElementById('model').textContent.includes('3 classes')")
            assert not page.is_visible("#auth")
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#overlay[data-ready='true']", timeout=60_000)
        finally:
            browser.close()


def test_docs_render_offline(page_url):
    """Swagger UI renders the API from local files; Chromium requests nothing from another host."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_url + "/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
            assert "fcnseg" in page.text_content(".swagger-ui .info .title")
            page.click("#operations-default-segment_v1_segment_post")  # expand the upload operation
            page.wait_for_selector(".opblock-body")
            page.wait_for_load_state("networkidle")
        finally:
            browser.close()
    assert on_this_server(requests, page_url) == [], requests
    assert page_url + "/openapi.json" in requests
