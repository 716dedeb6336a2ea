"""How the API serves the web UI's files (cellblock/api/web.py), without a browser: a bundle that is not built
yet (a clear 503 page, never a crash), the built one (index, assets, cache headers, CSP), and paths that try to
leave the bundle's directory."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from cellblock.api import web
from cellblock.api.errors import install_error_handlers


def client_for(dist: Path) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    web.install(app, dist)
    return TestClient(app)


def test_not_built_yet_answers_a_page_saying_how_to_build(tmp_path: Path) -> None:
    client = client_for(tmp_path / "dist")
    page = client.get("/")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "scripts/setup" in page.text and "npm run build" in page.text
    missing = client.get("/assets/app.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_built_bundle_is_served_with_its_headers(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    client = client_for(dist)
    assert client.get("/").status_code == 503
    (dist / "assets").mkdir(parents=True)  # built after the API started: picked up without a restart
    (dist / "index.html").write_text("<!doctype html><title>Cellblock</title>")
    (dist / "assets" / "app.js").write_text("console.log(1)")
    (dist / "assets" / "chunk-ABC123.js").write_text("export {}")
    (tmp_path / "secret.txt").write_text("not for the web")

    page = client.get("/")
    assert page.status_code == 200 and "Cellblock" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"
    app_js = client.get("/assets/app.js")
    assert app_js.status_code == 200 and app_js.headers["cache-control"] == "no-cache"
    assert "javascript" in app_js.headers["content-type"]
    assert "immutable" in client.get("/assets/chunk-ABC123.js").headers["cache-control"]
    for escape in ("/assets/../../secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt"):
        assert client.get(escape).status_code == 404, escape
    assert client.post("/assets/app.js").status_code == 405
