"""Configuration from the environment (prefix ``BOTKIT_``) and a ``.env`` file.

One precedence, resolved here and only here (:meth:`Settings.for_bot`):

1. an explicit argument (``load_settings(sender=...)``, ``Settings(...)``);
2. the environment (``BOTKIT_*``, or the ``.env`` file);
3. the bot's own values (``Bot(sender=..., session_window=..., safety_margin=...)``);
4. the default.

Plugins add up instead: the bot's and ``BOTKIT_PLUGINS``'. A missing or
invalid value fails at start-up with one line per problem; secrets are never
printed (they are ``SecretStr``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from botkit._bot import Bot
from botkit._errors import BotkitError
from botkit._media import MEDIA_RETRY, MediaPolicy
from botkit._retry import RetryPolicy

DEFAULT_DEVINO_URL = "https://api.devino.online"

GENERATE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
"""The one line that prints a good secret, quoted in every complaint about one."""

MIN_TOKEN_CHARS = 20
"""The shortest webhook or API token ``botkit run`` accepts."""

MIN_CALLBACK_SECRET_BYTES = 32
"""The shortest callback secret accepted (the key of the callbackData signatures)."""

# Words that mark a value as a placeholder somebody forgot to replace.
_PLACEHOLDER_WORDS = (
    "change-me",
    "change_me",
    "changeme",
    "replace-me",
    "replace_me",
    "replaceme",
    "placeholder",
    "your-",
    "your_",
    "example",
    "xxxx",
    "todo",
)
_PLACEHOLDER_VALUES = frozenset({"secret", "password", "token", "test", "dev", "admin", "default"})


# The URL forms the Redis store takes (botkit.storage.redis.connection.SCHEMES).
_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster")


MEDIA_ATTEMPTS = MEDIA_RETRY.attempts
"""Tries of one media download (within ``BOTKIT_MEDIA_TIMEOUT``)."""

# The settings a Bot may give values for (``Bot(sender=...)``, ...).
_BOT_VALUES = ("sender", "session_window", "safety_margin")


class SettingsError(BotkitError, ValueError):
    """The configuration is missing or invalid; the message has one line per problem."""


class Settings(BaseSettings):
    """Everything an operator configures, read from ``BOTKIT_*`` variables.

    See the README's configuration table for each variable.
    """

    model_config = SettingsConfigDict(
        env_prefix="BOTKIT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    devino_url: str = DEFAULT_DEVINO_URL
    devino_api_key: SecretStr | None = None
    devino_login: str | None = None
    devino_password: SecretStr | None = None
    sender: str | None = None
    redis_url: SecretStr | None = None
    webhook_token: SecretStr | None = None
    public_url: str | None = None
    api_token: SecretStr | None = None
    callback_secret: SecretStr | None = None
    agent_token: SecretStr | None = None
    agent_webhook_url: str | None = None
    agent_webhook_secret: SecretStr | None = None
    agent_webhook_claim_after: float = Field(default=30.0, gt=0)
    handoff_timeout: float = Field(default=1800.0, gt=0)
    transcript_length: int = Field(default=500, ge=0, le=100_000)
    transcript_ttl_days: float = Field(default=30.0, gt=0)
    session_window: float = Field(default=86_400.0, gt=0)
    safety_margin: float | None = Field(default=None, ge=0)
    plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    body_timeout: float = Field(default=10.0, gt=0)
    max_reply_chars: int = Field(default=4096, gt=0)
    media_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    media_max_bytes: int | None = Field(default=None, gt=0)
    media_timeout: float = Field(default=30.0, gt=0)
    key_prefix: str = Field(default="botkit", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    lock_ttl: float = Field(default=30.0, gt=0)
    acquire_timeout: float = Field(default=10.0, gt=0)
    conversation_ttl_days: float = Field(default=30.0, gt=0)
    dedupe_ttl_hours: float = Field(default=48.0, gt=0)
    sent_ttl_days: float = Field(default=7.0, gt=0)
    seen_per_user: int = Field(default=32, ge=1, le=10_000)
    sent_per_user: int = Field(default=32, ge=1, le=10_000)
    redis_shards: int | None = Field(default=None, ge=1, le=16_384)
    redis_wait_replicas: int = Field(default=0, ge=0, le=16)
    batch_size: int = Field(default=100, ge=1, le=1000)
    batch_linger: float = Field(default=0.02, ge=0, le=1, allow_inf_nan=False)
    devino_timeout: float | None = Field(default=None, gt=0)
    retry_base_delay: float = Field(default=0.5, ge=0, allow_inf_nan=False)
    retry_max_delay: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    retry_jitter: float = Field(default=1.0, ge=0, le=1)
    receipt_grace: float = Field(default=60.0, ge=0)
    timer_lease: float = Field(default=60.0, gt=0)
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("plugins", "media_allow_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("devino_url", "public_url", "agent_webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")) or "://" not in value[:9]:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the value: the URL may hold a password.
        if value is None or not value.get_secret_value():
            return None
        scheme = value.get_secret_value().partition("://")[0].lower()
        if scheme not in _REDIS_SCHEMES:
            raise ValueError(
                "must be a redis://, rediss://, unix://, redis+sentinel://, redis+cluster:// "
                "or rediss+cluster:// URL"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    # -- derived -------------------------------------------------------------

    def for_bot(self, bot: Bot) -> Settings:
        """These settings, with ``bot``'s values where no argument or variable set one.

        The one place the precedence is decided: explicit argument >
        environment > ``Bot(...)`` > default. ``plugins`` are the bot's
        followed by the environment's. Applying it twice changes nothing.
        """
        fixed = self.model_fields_set
        update: dict[str, object] = {}
        for name in _BOT_VALUES:
            value = getattr(bot, name)
            if value is not None and name not in fixed:
                update[name] = value
        plugins = [*bot.plugins, *(p for p in self.plugins if p not in bot.plugins)]
        if plugins != self.plugins:
            update["plugins"] = plugins
        return self.model_copy(update=update) if update else self

    def secret(self, name: str) -> str | None:
        """The plain value of a secret setting (``webhook_token``, ``api_token``...)."""
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def signing_secret(self) -> str | None:
        """The configured callback secret; :class:`SettingsError` when it is too short to sign.

        A short secret is not refused while the settings load, so that
        ``botkit run`` can report it together with every other weak secret
        (:meth:`weak_secrets`); whatever builds a service from the settings
        (``create_app``, ``botkit dev``) refuses it here, in one line.
        """
        value = self.secret("callback_secret")
        if value is not None and len(value.encode()) < MIN_CALLBACK_SECRET_BYTES:
            raise SettingsError(
                f"BOTKIT_CALLBACK_SECRET: must be at least {MIN_CALLBACK_SECRET_BYTES} bytes long "
                f"(a long random string); generate one with: {GENERATE_SECRET}"
            )
        return value

    def weak_secrets(self) -> list[str]:
        """One line per secret that is a placeholder or too short to keep a service safe.

        ``botkit run`` refuses to start with any: the webhook token, the API
        and agent tokens, the agent webhook's secret and the callback secret
        must be long and random, and the
        provider key must not be an example's placeholder.
        """
        minimum = {
            "devino_api_key": 1,
            "webhook_token": MIN_TOKEN_CHARS,
            "api_token": MIN_TOKEN_CHARS,
            "agent_token": MIN_TOKEN_CHARS,
            "agent_webhook_secret": MIN_TOKEN_CHARS,
            "callback_secret": MIN_CALLBACK_SECRET_BYTES,
        }
        problems = []
        for name, least in minimum.items():
            value = self.secret(name)
            if not value:
                continue
            if is_placeholder(value):
                problem = "is a placeholder from an example"
            elif len(value.encode()) < least or len(set(value)) < min(least, 8):
                problem = f"is too short or too simple (at least {least} random characters)"
            else:
                continue
            hint = "" if name == "devino_api_key" else f"; generate one with: {GENERATE_SECRET}"
            problems.append(f"BOTKIT_{name.upper()}: {problem}{hint}")
        if self.agent_webhook_url and not (
            self.secret("agent_webhook_secret") or self.secret("agent_token")
        ):
            problems.append(
                "BOTKIT_AGENT_WEBHOOK_URL: set BOTKIT_AGENT_WEBHOOK_SECRET (or "
                f"BOTKIT_AGENT_TOKEN), the key its posts are signed with; generate one with: "
                f"{GENERATE_SECRET}"
            )
        return problems

    def retry_policy(self, attempts: int | None = None) -> RetryPolicy:
        """The one backoff of every retrying path of the service.

        The outbox worker (sends, reads, acknowledgements), the timer worker,
        the store's reconnects and loading the callback secret wait this long
        between tries and never give up (``attempts=None``); the agent
        webhook gives up after ``attempts``. The provider client tries each
        request once, so retries are never nested.
        """
        return RetryPolicy(
            attempts=attempts,
            base_delay=self.retry_base_delay,
            max_delay=self.retry_max_delay,
            jitter=self.retry_jitter,
        )

    def media_policy(self) -> MediaPolicy:
        """Where ``ctx.download_media`` may fetch from, how much and how long."""
        return MediaPolicy(
            allow_hosts=tuple(self.media_allow_hosts),
            max_bytes=self.media_max_bytes,
            timeout=self.media_timeout,
            retry=self.retry_policy(attempts=MEDIA_ATTEMPTS),
        )

    def require(self, *names: str) -> None:
        """Fail with one line per missing setting among ``names``."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError(
                "\n".join(f"BOTKIT_{n.upper()}: required but not set" for n in missing)
            )


def is_placeholder(value: str) -> bool:
    """True for a value that an example file or a tutorial put there to be replaced."""
    lowered = value.strip().lower()
    return lowered in _PLACEHOLDER_VALUES or any(word in lowered for word in _PLACEHOLDER_WORDS)


def load_settings(**overrides: object) -> Settings:
    """Read the settings; raise :class:`SettingsError` with one line per problem.

    ``overrides`` (non-None values) win over the environment.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"BOTKIT_{field.upper()}: {message}")
        raise SettingsError("\n".join(lines)) from None
