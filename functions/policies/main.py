"""Lambda entry point of the policies function: `app` for ASGI servers, `handler` for Lambda."""

from functions.policies.router import (
    approvals_router,
    policies_router,
    servers_router,
    sessions_router,
)
from shared.web import create_app, make_handler

HEALTH_PATH = "/api/v1/policies/_health"

app = create_app(
    "policies",
    routers=[servers_router, policies_router, sessions_router, approvals_router],
    health_path=HEALTH_PATH,
)
handler = make_handler(app)
