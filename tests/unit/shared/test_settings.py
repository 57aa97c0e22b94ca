"""Settings from CERTFLEET_* environment variables: parsed into types, and a bad value
stops the process with an error that names the variable to fix."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import DEVELOPMENT_SECRET_KEY, MAKE_A_KEY, Settings, require_own_secret_key


def test_defaults_without_any_variable():
    settings = Settings.from_env({"PATH": "/usr/bin", "DATABASE_URL": "ignored: no prefix"})
    assert settings == Settings()
    assert settings.broker_url == ""  # the in-process broker
    assert settings.database_url.startswith("sqlite:///")


def test_every_variable_is_parsed_into_its_type():
    env = {
        "CERTFLEET_DATABASE_URL": "postgresql://certfleet@db:5432/certfleet",
        "CERTFLEET_BROKER_URL": "redis://:s3cret@redis:6379/2",
        "CERTFLEET_SECRET_KEY": "a long random string",
        "CERTFLEET_JOB_LEASE_SECONDS": "90",
        "CERTFLEET_JOB_MAX_ATTEMPTS": " 7 ",
        "CERTFLEET_RETRY_BACKOFF_MS": "250",
        "CERTFLEET_RETRY_BACKOFF_MAX_MS": "60000",
        "CERTFLEET_DEVICE_TIMEOUT_SECONDS": "2.5",
        "CERTFLEET_RECONCILE_INTERVAL_SECONDS": "1",
        "CERTFLEET_WORKER_METRICS_HOST": "0.0.0.0",
        "CERTFLEET_WORKER_METRICS_PORT": "9300",
        "CERTFLEET_QUEUE_PREFETCH": "128",
        "CERTFLEET_LOG_LEVEL": "debug",
        "CERTFLEET_LOG_FORMAT": "console",
    }
    s = Settings.from_env(env)
    assert s.database_url == "postgresql://certfleet@db:5432/certfleet"
    assert s.sqlalchemy_url == "postgresql+psycopg://certfleet@db:5432/certfleet"
    assert s.broker_url == "redis://:s3cret@redis:6379/2"
    assert s.secret_key == "a long random string"
    assert (s.job_lease_seconds, s.job_max_attempts) == (90, 7)
    assert (s.retry_backoff_ms, s.retry_backoff_max_ms) == (250, 60000)
    assert s.device_timeout_seconds == 2.5 and isinstance(s.device_timeout_seconds, float)
    assert s.reconcile_interval_seconds == 1.0
    assert (s.worker_metrics_host, s.worker_metrics_port, s.queue_prefetch) == ("0.0.0.0", 9300, 128)
    assert (s.log_level, s.log_format) == ("debug", "console")


def test_sqlite_url_is_used_as_given():
    s = Settings.from_env({"CERTFLEET_DATABASE_URL": "sqlite:////var/lib/certfleet/certfleet.db"})
    assert s.sqlalchemy_url == "sqlite:////var/lib/certfleet/certfleet.db"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CERTFLEET_JOB_LEASE_SECONDS", "sixty", "is not a valid int"),
        ("CERTFLEET_JOB_MAX_ATTEMPTS", "2.5", "is not a valid int"),
        ("CERTFLEET_WORKER_METRICS_PORT", "", "is not a valid int"),
        ("CERTFLEET_DEVICE_TIMEOUT_SECONDS", "10s", "is not a valid float"),
        ("CERTFLEET_BROKER_URL", "amqp://rabbit:5672", "must be a redis:// URL"),
        ("CERTFLEET_DATABASE_URL", "mysql://db/certfleet", "must be a sqlite:// or postgresql:// URL"),
        ("CERTFLEET_JOB_MAX_ATTEMPTS", "0", "must be at least 1"),
        ("CERTFLEET_JOB_LEASE_SECONDS", "0", "must be greater than 0"),
        ("CERTFLEET_RETRY_BACKOFF_MS", "-5", "must be greater than 0"),
        ("CERTFLEET_DEVICE_TIMEOUT_SECONDS", "nan", "must be greater than 0"),
        ("CERTFLEET_RECONCILE_INTERVAL_SECONDS", "-1", "must be greater than 0"),
        ("CERTFLEET_QUEUE_PREFETCH", "0", "must be greater than 0"),
        ("CERTFLEET_WORKER_METRICS_PORT", "70000", "must be a port number"),
        ("CERTFLEET_LOG_LEVEL", "LOUD", "must be one of DEBUG, INFO"),
        ("CERTFLEET_LOG_FORMAT", "xml", "must be json or console"),
        ("CERTFLEET_ALERT_RELAY_IDLE_SECONDS", "0.1", "must be at least CERTFLEET_ALERT_RELAY_INTERVAL_SECONDS"),
        ("CERTFLEET_TOKEN_LIFETIME_DAYS", "0", "must be between 1 and 3650"),
        ("CERTFLEET_TOKEN_LIFETIME_DAYS", "36500", "must be between 1 and 3650"),
    ],
)
def test_bad_value_names_the_variable(variable, value, says):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({variable: value})
    assert info.value.code == "configuration_error"
    assert variable in str(info.value)
    assert says in str(info.value)


def test_a_bad_value_does_not_echo_the_secret_key():
    # The secret key is a plain string, so it never fails to parse, and the errors of
    # other variables never quote it.
    env = {"CERTFLEET_SECRET_KEY": "do-not-print-me", "CERTFLEET_JOB_LEASE_SECONDS": "x"}
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env)
    assert "do-not-print-me" not in str(info.value)


def test_settings_are_frozen():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.database_url = "sqlite:///other.db"  # type: ignore[misc]


def test_without_a_secret_key_the_development_key_is_used_and_said_so():
    assert Settings.from_env({}).uses_development_key
    assert not Settings.from_env({"CERTFLEET_SECRET_KEY": "an operator's own key"}).uses_development_key


def test_a_service_refuses_the_development_key_and_says_how_to_make_one():
    with pytest.raises(ConfigurationError) as info:
        require_own_secret_key(Settings(), service="worker")
    assert info.value.code == "development_secret_key"
    assert "the worker would encrypt stored secrets" in info.value.message
    assert MAKE_A_KEY in info.value.message and "--insecure-dev-key" in info.value.message
    # Set to the development key's value by hand is no better than unset.
    with pytest.raises(ConfigurationError):
        require_own_secret_key(Settings.from_env({"CERTFLEET_SECRET_KEY": DEVELOPMENT_SECRET_KEY}), service="worker")


def test_insecure_dev_key_allows_the_development_key_with_a_warning(caplog):
    require_own_secret_key(Settings(), service="controller", insecure_dev_key=True)
    assert "controller runs with the development secret key" in caplog.text
    caplog.clear()
    require_own_secret_key(Settings(secret_key="own"), service="controller")
    assert caplog.text == ""
