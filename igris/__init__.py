"""Local tooling: the `igris` command (serve, migrate, invoke) and the local PostgreSQL stack."""
