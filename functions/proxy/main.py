"""Lambda entry point of the proxy function: `app` for ASGI servers, `handler` for Lambda."""

from functions.proxy.router import router
from functions.proxy.tracing import TraceIdMiddleware
from shared.web import create_app, make_handler

HEALTH_PATH = "/proxy/_health"

app = create_app("proxy", routers=[router], health_path=HEALTH_PATH)
app.add_middleware(TraceIdMiddleware)
handler = make_handler(app)
