"""Settings: the BOTKIT_ variables, a .env file, the Bot's own values, and the errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from botkit import Bot
from botkit.service import DEFAULT_DEVINO_URL, Service, Settings, SettingsError, load_settings
from tests.service._harness import API_KEY, API_TOKEN, REDIS_PASSWORD, SECRETS, WEBHOOK_TOKEN


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No BOTKIT_ variable from outside, and a working directory without a .env file."""
    import os

    for name in list(os.environ):
        if name.startswith("BOTKIT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_the_defaults_are_the_documented_ones() -> None:
    settings = load_settings()
    assert settings.devino_url == DEFAULT_DEVINO_URL == "https://api.devino.online"
    assert settings.session_window == 86_400
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.redis_url is None
    assert settings.webhook_token is None
    assert settings.public_url is None
    assert settings.api_token is None
    assert settings.log_format == "console"


def test_every_documented_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "BOTKIT_DEVINO_URL": "http://127.0.0.1:9000/",
        "BOTKIT_DEVINO_API_KEY": API_KEY,
        "BOTKIT_SENDER": "PizzaCo",
        "BOTKIT_REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis:6379/0",
        "BOTKIT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "BOTKIT_PUBLIC_URL": "https://bot.example.com/",
        "BOTKIT_API_TOKEN": API_TOKEN,
        "BOTKIT_SESSION_WINDOW": "3600",
        "BOTKIT_MAX_BODY_BYTES": "2048",
        "BOTKIT_LOG_FORMAT": "json",
        "BOTKIT_LOG_LEVEL": "debug",
        "BOTKIT_PLUGINS": "optout, other ,",
        "BOTKIT_DEDUPE_TTL_HOURS": "12",
        "BOTKIT_SENT_TTL_DAYS": "3",
        "BOTKIT_SEEN_PER_USER": "8",
        "BOTKIT_SENT_PER_USER": "16",
        "BOTKIT_REDIS_SHARDS": "64",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.devino_url == "http://127.0.0.1:9000"
    assert settings.secret("devino_api_key") == API_KEY
    assert settings.sender == "PizzaCo"
    assert settings.secret("redis_url") == f"redis://:{REDIS_PASSWORD}@redis:6379/0"
    assert settings.secret("webhook_token") == WEBHOOK_TOKEN
    assert settings.public_url == "https://bot.example.com"
    assert settings.secret("api_token") == API_TOKEN
    assert settings.session_window == 3600
    assert settings.max_body_bytes == 2048
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    assert settings.plugins == ["optout", "other"]
    assert (settings.dedupe_ttl_hours, settings.sent_ttl_days) == (12, 3)
    assert (settings.seen_per_user, settings.sent_per_user, settings.redis_shards) == (8, 16, 64)


def test_a_dotenv_file_is_read_and_the_environment_wins_over_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        f"BOTKIT_WEBHOOK_TOKEN={WEBHOOK_TOKEN}\nBOTKIT_SENDER=FromFile\n# a comment\nUNRELATED=1\n"
    )
    settings = load_settings()
    assert settings.secret("webhook_token") == WEBHOOK_TOKEN
    assert settings.sender == "FromFile"
    monkeypatch.setenv("BOTKIT_SENDER", "FromEnv")
    assert load_settings().sender == "FromEnv"


CODED = Bot("coded", sender="CodeSender", session_window=600, safety_margin=5)


def resolved(bot: Bot, **explicit: object) -> tuple[str, float, float | None]:
    """What a service built for ``bot`` uses: sender name, window length, safety margin."""
    service = Service(bot, load_settings(devino_api_key=API_KEY, **explicit))
    window = service.runtime.policy.window
    return service.sender.sender_name, window.length, window.safety_margin


def test_precedence_default_then_bot() -> None:
    assert resolved(Bot("plain")) == ("botkit", 86_400, 300)  # 5 minutes of 24 hours
    assert resolved(CODED) == ("CodeSender", 600, 5)


def test_precedence_the_environment_wins_over_the_bot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTKIT_SENDER", "EnvSender")
    monkeypatch.setenv("BOTKIT_SESSION_WINDOW", "7200")
    monkeypatch.setenv("BOTKIT_SAFETY_MARGIN", "60")
    assert resolved(CODED) == ("EnvSender", 7200, 60)
    # A variable set to the default's value is still set: it wins too.
    monkeypatch.setenv("BOTKIT_SESSION_WINDOW", "86400")
    assert resolved(CODED)[1] == 86_400


def test_precedence_an_explicit_argument_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOTKIT_SENDER", "EnvSender")
    monkeypatch.setenv("BOTKIT_SESSION_WINDOW", "7200")
    explicit = resolved(CODED, sender="Given", session_window=900, safety_margin=0)
    assert explicit == ("Given", 900, 0)


def test_precedence_is_the_same_for_the_store_the_dev_server_and_botkit_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOTKIT_SESSION_WINDOW", "172800")  # two days, over the bot's 600 s
    settings = load_settings(devino_api_key=API_KEY, conversation_ttl_days=1)
    resolved_once = settings.for_bot(CODED)
    assert resolved_once.session_window == 172_800
    assert resolved_once.for_bot(CODED) == resolved_once  # applying it twice changes nothing
    service = Service(CODED, settings)
    assert service.settings.session_window == 172_800
    assert service.store.config.conversation_ttl >= 172_800
    assert service.runtime.policy.window.length == 172_800


def test_plugins_add_up_the_bot_s_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTKIT_PLUGINS", "extra,optout")
    settings = load_settings().for_bot(Bot("p", plugins=["optout"]))
    assert settings.plugins == ["optout", "extra"]


def test_the_store_keeps_conversations_for_the_bots_own_session_window() -> None:
    # A conversation must outlive the window the replies are planned with: the
    # store follows Bot(session_window=...) as the reply policy does.
    settings = load_settings(devino_api_key=API_KEY, conversation_ttl_days=1)
    two_days = 2 * 86_400.0
    service = Service(Bot("long-window", session_window=two_days), settings)
    assert service.runtime.policy.window.length == two_days
    assert service.store.config.conversation_ttl >= two_days
    plain = Service(Bot("plain"), settings)
    assert plain.store.config.conversation_ttl == 86_400.0


def test_overrides_given_to_load_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTKIT_SENDER", "EnvSender")
    assert load_settings(sender="Given").sender == "Given"
    assert load_settings(sender=None).sender == "EnvSender"


def test_invalid_values_fail_with_one_line_per_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTKIT_SESSION_WINDOW", "a day")
    monkeypatch.setenv("BOTKIT_MAX_BODY_BYTES", "-1")
    monkeypatch.setenv("BOTKIT_DEVINO_URL", "ftp://devino")
    monkeypatch.setenv("BOTKIT_LOG_FORMAT", "xml")
    monkeypatch.setenv("BOTKIT_REDIS_URL", f"http://:{REDIS_PASSWORD}@redis")
    with pytest.raises(SettingsError) as failed:
        load_settings()
    lines = str(failed.value).splitlines()
    assert sorted(line.split(":")[0] for line in lines) == [
        "BOTKIT_DEVINO_URL",
        "BOTKIT_LOG_FORMAT",
        "BOTKIT_MAX_BODY_BYTES",
        "BOTKIT_REDIS_URL",
        "BOTKIT_SESSION_WINDOW",
    ]
    assert REDIS_PASSWORD not in str(failed.value)


def test_require_names_each_missing_setting() -> None:
    with pytest.raises(SettingsError) as failed:
        load_settings().require("webhook_token", "devino_api_key")
    assert str(failed.value).splitlines() == [
        "BOTKIT_WEBHOOK_TOKEN: required but not set",
        "BOTKIT_DEVINO_API_KEY: required but not set",
    ]


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://:pw@redis.example:6380/1",
        "unix:///run/redis.sock",
        "redis+sentinel://s1:26379,s2:26379/mymaster/0",
    ],
)
def test_redis_urls_of_every_supported_kind_are_accepted(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("BOTKIT_REDIS_URL", url)
    assert load_settings().secret("redis_url") == url


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTKIT_DEVINO_API_KEY", API_KEY)
    monkeypatch.setenv("BOTKIT_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
    monkeypatch.setenv("BOTKIT_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("BOTKIT_REDIS_URL", f"redis://:{REDIS_PASSWORD}@redis:6379/0")
    settings = load_settings()
    shown = "\n".join(
        [
            str(settings),
            repr(settings),
            settings.model_dump_json(),
            str(settings.model_dump()),
            repr(Service(Bot("shown"), settings).client),
        ]
    )
    for secret in SECRETS:
        assert secret not in shown
    assert isinstance(settings, Settings)


def test_a_short_callback_secret_is_refused_by_whatever_builds_a_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Loading accepts it (botkit run reports it with every other weak secret,
    # tests/service/test_cli.py); a service is never built on it.
    monkeypatch.setenv("BOTKIT_DEVINO_API_KEY", API_KEY)
    monkeypatch.setenv("BOTKIT_CALLBACK_SECRET", "short-pw")
    settings = load_settings()
    assert settings.weak_secrets() == [
        "BOTKIT_CALLBACK_SECRET: is too short or too simple (at least 32 random characters); "
        'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
    ]
    with pytest.raises(SettingsError) as failed:
        Service(Bot("short"), settings)
    assert str(failed.value) == (
        "BOTKIT_CALLBACK_SECRET: must be at least 32 bytes long (a long random string); "
        'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
    )
    monkeypatch.setenv("BOTKIT_CALLBACK_SECRET", "a-long-enough-callback-secret-0123")
    settings = load_settings()
    assert settings.weak_secrets() == []
    assert Service(Bot("long"), settings).signer_ready


def test_one_retry_policy_from_the_settings_drives_every_retrying_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOTKIT_RETRY_BASE_DELAY", "0.1")
    monkeypatch.setenv("BOTKIT_RETRY_MAX_DELAY", "3")
    monkeypatch.setenv("BOTKIT_RETRY_JITTER", "0")
    settings = load_settings(devino_api_key=API_KEY)
    policy = settings.retry_policy()
    assert [policy.delay(n) for n in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0]
    service = Service(Bot("retrying"), settings)
    assert service.sender.config.retry == policy
    assert service.timers.config.retry == policy
    assert service.store.config.reconnect == policy
    assert service.agents.retry == dataclasses.replace(policy, attempts=8)  # the webhook gives up
    assert service.runtime.media_policy.retry == dataclasses.replace(policy, attempts=3)
    # Not nested: the provider client tries each request once.
    assert service.client.retry.attempts == 1
    monkeypatch.setenv("BOTKIT_RETRY_JITTER", "2")
    with pytest.raises(SettingsError, match=r"retry_jitter|RETRY_JITTER"):
        load_settings()


def test_the_sender_batches_as_the_settings_say(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        Service(Bot("batching"), load_settings(devino_api_key=API_KEY)).sender.config.linger == 0.02
    )
    monkeypatch.setenv("BOTKIT_BATCH_SIZE", "40")
    monkeypatch.setenv("BOTKIT_BATCH_LINGER", "0.005")
    config = Service(Bot("batching"), load_settings(devino_api_key=API_KEY)).sender.config
    assert (config.batch_size, config.linger) == (40, 0.005)
    monkeypatch.setenv("BOTKIT_BATCH_LINGER", "5")
    with pytest.raises(SettingsError, match=r"batch_linger|BATCH_LINGER"):
        load_settings()
