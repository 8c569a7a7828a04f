"""Lambda entry point of the auth function: `app` for ASGI servers, `handler` for Lambda."""

from functions.auth.better_auth import router as better_auth
from functions.auth.router import api_keys
from functions.auth.social import router as social
from shared.web import create_app, make_handler

HEALTH_PATH = "/api/auth/_health"

app = create_app("auth", routers=[better_auth, social, api_keys], health_path=HEALTH_PATH)
handler = make_handler(app)
