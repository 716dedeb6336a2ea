"""The web UI at `/`: the bundle that `scripts/setup` builds from cellblock/web/ into cellblock/web/dist/.

    /               dist/index.html (503 with a page saying how to build it, when it has not been built)
    /assets/<file>  dist/assets/: app.js and style.css (revalidated each load), chunk-<hash>.js (cached for good)

Static files take no API key (they hold no data); the page's own API calls carry the key the user pastes in. The
API starts whether or not the bundle exists, and picks up a bundle built after it started. A Content-Security-
Policy of 'self' keeps the page from loading anything from elsewhere, so nothing from a CDN can creep in.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
# CodeMirror writes its styles into <style> elements at run time: styles need 'unsafe-inline', scripts do not.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'")  # fmt: skip
PAGE_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cellblock: web UI not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>The web UI has not been built</h1>
<p>This server runs, but its web UI bundle is missing. Build it with <code>sudo scripts/setup --no-serve</code>
(it runs <code>npm ci &amp;&amp; npm run build</code> in <code>cellblock/web/</code>), then reload this page.</p>
<p>The API itself works: see <a href="/docs">/docs</a>.</p>
</body></html>
"""


class Assets(StaticFiles):
    """StaticFiles that tolerate a bundle not built yet (404s, not an error) and set cache headers by name."""

    async def check_config(self) -> None:
        """Starlette raises here when the directory is missing; a missing bundle is the not-built case instead."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:  # fmt: skip
        response = super().file_response(full_path, stat_result, scope, status_code)
        # Chunk names carry a hash of their content; app.js, style.css and theme.js keep their names.
        immutable = Path(full_path).name.startswith("chunk-")
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if immutable else "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install(app: FastAPI, dist: Path = WEB_DIST) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = dist / "index.html"
        if not page.is_file():
            return HTMLResponse(NOT_BUILT, status_code=503, headers={"Retry-After": "60", "Cache-Control": "no-cache"})
        return FileResponse(page, media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/assets", Assets(directory=dist / "assets", check_dir=False), name="web-assets")
