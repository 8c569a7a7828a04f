"""Lambda entry point of the orgs function: `app` for ASGI servers, `handler` for Lambda."""

from functions.orgs.router import router
from shared.web import create_app, make_handler

HEALTH_PATH = "/api/auth/organization/_health"

app = create_app("orgs", routers=[router], health_path=HEALTH_PATH)
handler = make_handler(app)
