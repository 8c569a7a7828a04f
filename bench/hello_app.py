"""The baseline: a bare FastAPI + Mangum hello app, imported the way a function is."""

from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, str]:
    """Say hello."""
    return {"hello": "world"}


handler = Mangum(app, lifespan="off")
