"""What the look-and-feel browser tests share: a logged-in page in a theme; text contrast as the browser draws it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.test import Client

from tests.e2e.conftest import TIMEOUT_MS

# For every element under the roots with text of its own (visible), its text colour and the colour behind it:
# the first background that is not transparent up the tree, with any half-transparent ones above it blended in.
COLOURS_JS = """
(roots) => {
  const parse = (css) => {
    const m = css.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const behind = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const bg = parse(getComputedStyle(node).backgroundColor);
      if (bg && bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; }
    }
    let base = [255, 255, 255];  // the canvas, were nothing opaque (the admin's body always is)
    for (const [r, g, b, a] of layers.reverse()) {
      base = [r * a + base[0] * (1 - a), g * a + base[1] * (1 - a), b * a + base[2] * (1 - a)];
    }
    return base;
  };
  const out = [];
  for (const root of roots) {
    for (const el of [root, ...root.querySelectorAll('*')]) {
      const own = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
      if (!own || el.getClientRects().length === 0) continue;
      const bg = behind(el);
      const fg = parse(getComputedStyle(el).color);
      const text = [fg[0] * fg[3] + bg[0] * (1 - fg[3]), fg[1] * fg[3] + bg[1] * (1 - fg[3]),
                    fg[2] * fg[3] + bg[2] * (1 - fg[3])];
      out.push({text: own.slice(0, 60), tag: el.tagName.toLowerCase(), cls: el.className, fg: text, bg: bg});
    }
  }
  return out;
}
"""


def luminance(rgb: list[float]) -> float:
    channels = [c / 255 for c in rgb]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: list[float], second: list[float]) -> float:
    """The WCAG contrast ratio of two colours (1 to 21)."""
    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def text_colours(page: Any, selector: str) -> list[dict[str, Any]]:
    """Each piece of visible text under the elements `selector` matches, with its colours and their contrast."""
    found = page.locator(selector).evaluate_all(COLOURS_JS)
    for item in found:
        item["contrast"] = round(contrast(item["fg"], item["bg"]), 2)
    return found


def body_background(page: Any) -> list[float]:
    return page.evaluate("() => getComputedStyle(document.body).backgroundColor.match(/\\d+/g).map(Number)")


@contextmanager
def themed_page(browser: Any, live_server: Any, user: Any, *, theme: str, scheme: str,
                viewport: dict[str, int] | None = None) -> Iterator[Any]:
    """A page logged in as `user` (through a session cookie) with the admin's theme switch at `theme` ("light",
    "dark" or "auto") and the system's colour scheme (what "auto" follows) at `scheme`."""
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}, color_scheme=scheme)
    context.set_default_timeout(TIMEOUT_MS)
    # The admin's theme switch keeps its choice in localStorage; set it before any page of the site loads.
    context.add_init_script(f"window.localStorage.setItem('theme', {json.dumps(theme)});")
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME,
                          "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "url": live_server.url}])
    try:
        yield context.new_page()
    finally:
        context.close()


def open_page(page: Any, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.ok, f"GET {url} answered {response and response.status}"
