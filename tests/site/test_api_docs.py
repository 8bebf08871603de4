"""The API docs page (/api/docs/) loads Swagger UI from the site's own static files: no outside network needed."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

DOCS = "/api/docs/"


class AssetLinks(HTMLParser):
    """Collects what a page loads: script sources and link hrefs (stylesheets, icons), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[tuple[str, str]] = []  # (tag and rel, URL)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.assets.append(("script", found["src"] or ""))
        elif tag == "link" and found.get("href"):
            self.assets.append((f"link {found.get('rel') or ''}".strip(), found["href"] or ""))


def page_assets(html: str) -> list[tuple[str, str]]:
    parser = AssetLinks()
    parser.feed(html)
    return parser.assets


def test_the_docs_page_loads_every_script_and_stylesheet_from_this_site(client):
    response = client.get(DOCS)

    assert response.status_code == 200
    html = response.content.decode()
    assets = page_assets(html)
    kinds = sorted({kind for kind, _ in assets})
    assert kinds == ["link icon", "link stylesheet", "script"], assets
    # Nothing from another host: no scheme, no protocol-relative //host, no CDN named anywhere in the page.
    outside = [url for _, url in assets if urlsplit(url).scheme or urlsplit(url).netloc]
    assert outside == []
    assert "cdn." not in html and "@latest" not in html
    assert all(url.startswith("/static/drf_spectacular_sidecar/swagger-ui-dist/") for _, url in assets), assets


CONTENT_TYPES = {"script": "text/javascript", "link stylesheet": "text/css", "link icon": "image/png"}


def test_each_asset_of_the_docs_page_answers_without_collectstatic(client):
    assets = page_assets(client.get(DOCS).content.decode())

    assert len(assets) == 4, assets  # the stylesheet, the icon and Swagger UI's two scripts
    for kind, url in assets:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Type"].startswith(CONTENT_TYPES[kind]), (url, response["Content-Type"])
        assert b"".join(response.streaming_content), url
