"""Swagger UI served from the installed `swagger_ui_bundle` package: no CDN, works offline.

The page, its start-up script and its assets all come from the gateway, so the
page's Content-Security-Policy allows `'self'` and nothing else for scripts
(no inline script: the start-up code is a file of its own). The bundle is
Swagger UI 4, which renders OpenAPI 3.0 only; it is handed a 3.0 rendering of
the API document (`nullable` instead of `type: 'null'`), while
`/api/openapi.json` stays the 3.1 document FastAPI makes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from potok.policies.security_headers.policy import OWN_PAGES_CSP

DOCS_PATH = "/api/docs"
STATIC_PATH = f"{DOCS_PATH}/static"
UI_DOCUMENT_PATH = f"{DOCS_PATH}/openapi-3.0.json"

PAGE_CSP = OWN_PAGES_CSP  # one policy for the gateway's pages, with or without security_headers

_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}

_INIT = f"""window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: "{UI_DOCUMENT_PATH}",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  }});
}});
"""

_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Potok gateway API</title>
<link rel="stylesheet" href="{STATIC_PATH}/swagger-ui.css">
<link rel="icon" type="image/png" href="{STATIC_PATH}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{STATIC_PATH}/swagger-ui-bundle.js"></script>
<script src="{STATIC_PATH}/init.js"></script>
</body>
</html>
"""

_CACHE = {"Cache-Control": "public, max-age=86400"}


def _load_assets(folder: Path) -> dict[str, tuple[bytes, str]]:
    """The files the page needs, read once when the API is built."""
    assets = {name: ((folder / name).read_bytes(), kind) for name, kind in _ASSETS.items()}
    assets["init.js"] = (_INIT.encode(), "text/javascript; charset=utf-8")
    return assets


def openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """The 3.1 document as 3.0: `anyOf: [X, {type: null}]` becomes X with `nullable: true`."""
    converted: dict[str, Any] = _downgrade(copy.deepcopy(document))
    converted["openapi"] = "3.0.3"
    return converted


def _downgrade(node: Any) -> Any:
    if isinstance(node, list):
        return [_downgrade(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _downgrade(value) for key, value in node.items()}
    for keyword in ("anyOf", "oneOf"):
        options = node.get(keyword)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del node[keyword]
            if len(rest) == 1 and "$ref" not in rest[0]:
                node.update(rest[0])
            elif rest:
                node["allOf" if len(rest) == 1 else keyword] = rest
            node["nullable"] = True
    if node.get("type") == "null":
        del node["type"]
        node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    examples = node.get("examples")
    if isinstance(examples, list) and "type" in node:
        node.pop("examples")
        if examples:
            node["example"] = examples[0]
    return node


def install(app: FastAPI, document: Callable[[], dict[str, Any]]) -> None:
    """Serve the page, its assets and the 3.0 document on `app`."""
    assets = _load_assets(Path(str(swagger_ui_path)))
    page = _PAGE.encode()
    ui_document: list[dict[str, Any]] = []

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui() -> Response:
        headers = {"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"}
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    @app.get(STATIC_PATH + "/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        found = assets.get(name)
        if found is None:  # answered as problem+json by the app's handler
            raise HTTPException(404, f"no asset {name!r} in the API docs")
        body, kind = found
        return Response(body, media_type=kind, headers=_CACHE)

    @app.get(UI_DOCUMENT_PATH, include_in_schema=False)
    async def document_30() -> Response:
        if not ui_document:
            ui_document.append(openapi_30(document()))
        return JSONResponse(ui_document[0])
