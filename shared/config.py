"""Settings from the environment (API.md §8). Nothing else in the project reads os.environ."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting Igris reads, with its environment variable name."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    env: Literal["local", "test", "production"] = Field(
        default="production", validation_alias="IGRIS_ENV"
    )
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    database_url_unpooled: SecretStr | None = Field(
        default=None, validation_alias="DATABASE_URL_UNPOOLED"
    )
    secret: SecretStr | None = Field(default=None, validation_alias="IGRIS_SECRET")
    encryption_key: SecretStr | None = Field(default=None, validation_alias="IGRIS_ENCRYPTION_KEY")
    allow_private_upstreams: bool = Field(
        default=False, validation_alias="IGRIS_ALLOW_PRIVATE_UPSTREAMS"
    )
    upstream_timeout_seconds: float = Field(
        default=20.0, gt=0, validation_alias="IGRIS_UPSTREAM_TIMEOUT_SECONDS"
    )
    db_connect_timeout_seconds: int = Field(
        default=5, gt=0, validation_alias="IGRIS_DB_CONNECT_TIMEOUT_SECONDS"
    )
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, validation_alias="IGRIS_MAX_BODY_BYTES")
    backup_bucket: str | None = Field(default=None, validation_alias="BACKUP_BUCKET")
    backup_prefix: str = Field(default="backups", validation_alias="BACKUP_PREFIX")
    backup_retention_days: int = Field(default=35, ge=1, validation_alias="BACKUP_RETENTION_DAYS")
    github_client_id: str | None = Field(default=None, validation_alias="IGRIS_GITHUB_CLIENT_ID")
    github_client_secret: SecretStr | None = Field(
        default=None, validation_alias="IGRIS_GITHUB_CLIENT_SECRET"
    )
    google_client_id: str | None = Field(default=None, validation_alias="IGRIS_GOOGLE_CLIENT_ID")
    google_client_secret: SecretStr | None = Field(
        default=None, validation_alias="IGRIS_GOOGLE_CLIENT_SECRET"
    )
    # Origins (scheme://host[:port]) allowed to send cookie-authenticated requests and to
    # sign in from a browser, besides the API's own origin. Comma-separated.
    trusted_origins_csv: str = Field(default="", validation_alias="IGRIS_TRUSTED_ORIGINS")
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    # Set by Lambda itself: the published version this environment runs ("$LATEST" if none).
    lambda_function_version: str | None = Field(
        default=None, validation_alias="AWS_LAMBDA_FUNCTION_VERSION"
    )
    # Social sign-in (functions/auth/social.py). The public origin of the API, used to build
    # the OAuth redirect_uri (`<base>/api/auth/callback/<provider>`); when unset, the
    # request's own origin. Set it in production so the redirect_uri never depends on Host.
    base_url: str | None = Field(default=None, validation_alias="IGRIS_BASE_URL")
    # Provider endpoints: the real ones by default; tests point them at a fake provider.
    github_authorize_url: str = Field(
        default="https://github.com/login/oauth/authorize",
        validation_alias="IGRIS_GITHUB_AUTHORIZE_URL",
    )
    github_token_url: str = Field(
        default="https://github.com/login/oauth/access_token",
        validation_alias="IGRIS_GITHUB_TOKEN_URL",
    )
    github_api_url: str = Field(
        default="https://api.github.com", validation_alias="IGRIS_GITHUB_API_URL"
    )
    google_authorize_url: str = Field(
        default="https://accounts.google.com/o/oauth2/v2/auth",
        validation_alias="IGRIS_GOOGLE_AUTHORIZE_URL",
    )
    google_token_url: str = Field(
        default="https://oauth2.googleapis.com/token", validation_alias="IGRIS_GOOGLE_TOKEN_URL"
    )
    google_userinfo_url: str = Field(
        default="https://openidconnect.googleapis.com/v1/userinfo",
        validation_alias="IGRIS_GOOGLE_USERINFO_URL",
    )
    # Per provider call; a callback makes at most three, within an overall 20 s budget.
    oauth_timeout_seconds: float = Field(
        default=8.0, gt=0, le=10, validation_alias="IGRIS_OAUTH_TIMEOUT_SECONDS"
    )

    @field_validator("backup_prefix")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        return value.strip("/")

    @property
    def is_local(self) -> bool:
        """True for a developer machine or the test suite (cookies without Secure, etc.)."""
        return self.env != "production"

    @property
    def trusted_origins(self) -> frozenset[str]:
        return frozenset(
            origin.strip().rstrip("/")
            for origin in self.trusted_origins_csv.split(",")
            if origin.strip()
        )

    def signing_key(self) -> bytes:
        """IGRIS_SECRET as bytes; refuses to run without one (fail closed)."""
        if self.secret is None or len(self.secret.get_secret_value()) < 32:
            raise RuntimeError("IGRIS_SECRET must be set (at least 32 characters)")
        return self.secret.get_secret_value().encode("utf-8")

    def pooled_url(self) -> str:
        """The URL the request path uses (Neon's pooled endpoint in production)."""
        if self.database_url is None:
            raise RuntimeError("DATABASE_URL is not set")
        return self.database_url.get_secret_value()

    def direct_url(self) -> str:
        """The URL for migrations and pg_dump; falls back to DATABASE_URL (API.md §8)."""
        chosen = self.database_url_unpooled or self.database_url
        if chosen is None:
            raise RuntimeError("neither DATABASE_URL_UNPOOLED nor DATABASE_URL is set")
        return chosen.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (tests clear the cache after changing env)."""
    return Settings()
