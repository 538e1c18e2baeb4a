"""The edge's API docs: Swagger UI served by the edge itself, so /docs works without internet.

Swagger UI's files come with the fastapi-swagger package (installed with the project, never fetched
at run time); the page may load from its own origin only (see edge.hardening's docs policy).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
_ASSETS = ("fastapi_swagger", "resources")


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``DOCS_PATH`` for the app's OpenAPI document (create the app with
    ``docs_url=None``: FastAPI's own page loads Swagger UI from a CDN)."""
    app.mount(ASSETS_PATH, StaticFiles(packages=[_ASSETS]), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        # Behind a proxy that strips a prefix, every URL the page loads carries it again.
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
        )
