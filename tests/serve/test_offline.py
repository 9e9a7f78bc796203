"""No page of the server loads anything from the internet: the API docs come from local assets (fastapi-offline).

The HTML of every page is parsed for the URLs it loads (scripts, styles, images, icons) and each must be on this
server and answer 200; the browser test also watches Chromium's requests on the live pages.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from fcnseg.serve import create_app

PAGES = ("/", "/docs")  # no /redoc: ReDoc loads its logo from cdn.redoc.ly


class Loads(HTMLParser):
    """The URLs an HTML page makes the browser fetch: src/href attributes, and URLs in inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and not (tag == "a" and name == "href"):  # links are not loads
                self.urls.append(value)

    def handle_data(self, data):
        self.urls += re.findall(r"""["'](https?://[^"']+|/[\w./-]+\.(?:js|css|png|ico|json))["']""", data)


@pytest.fixture(scope="module")
def client(segmenter, helpers):
    with helpers.client(create_app(segmenter, config=helpers.config())) as c:
        yield c


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_only_local_assets(client, page):
    r = client.get(page)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    parser = Loads()
    parser.feed(r.text)
    assert parser.urls, "the page should load its scripts"
    external = [u for u in parser.urls if re.match(r"^([a-z]+:)?//", u)]
    assert external == [], f"{page} loads from the internet: {external}"
    for url in parser.urls:
        assert client.get(url).status_code == 200, url
    assert "https://" not in r.text.replace('href="https://', "")  # no CDN or font URL anywhere in the page


def test_favicon(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/x-icon" and r.content[:4] == b"\0\0\1\0"
