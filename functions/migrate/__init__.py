"""The migrate function: alembic upgrade head on the direct URL, at deploy time and on demand."""
