"""Lambda entry point of the audit function: `app` for ASGI servers, `handler` for Lambda."""

from shared.web import create_app, make_handler

HEALTH_PATH = "/api/v1/audit-events/_health"

app = create_app("audit", health_path=HEALTH_PATH)
handler = make_handler(app)
