"""Secrets come from the environment or from files only, and never show (issue 10, item 8).

* Every secret key (`bus.embedded.token`, `http.token`, `bus.nats.password`, `bus.nats.token`,
  `bus.redis.password`) written in a config file is refused in one line naming its variable and its `*_file`
  key; the same value from the environment is taken verbatim.
* A `*_file` key names a file holding the secret alone: read at load time, trailing newline stripped; a missing,
  empty, multi-line file, a directory, or both the file and the variable set is one problem line.
* A broker URL holding a password or token (NATS: a lone user name is a token) is refused from the file and
  accepted from the environment; a Redis user name alone is not a secret.
* NATS authentication: user and password together, one way at most.
* `redacted` (check-config --print, /status) shows `***` for each; `secret_values` lists them for the logs, whose
  formatters (JSON and console) replace every registered secret, in messages, fields and tracebacks.
"""

from __future__ import annotations

import importlib.machinery
import io
import logging
import os
import re
import sys
import threading
import types
from pathlib import Path

import orjson
import pytest
import yaml

from flowgauge import logs
from flowgauge.config import (
    ConfigError,
    check_config_main,
    load_settings,
    redact_url,
    redacted,
    secret_values,
)

SECRET_KEYS = {
    "bus.embedded.token": "bus:\n  embedded:\n    token: {value}\n",
    "http.token": "http:\n  token: {value}\n",
    "bus.nats.password": "bus:\n  nats:\n    user: app\n    password: {value}\n",
    "bus.nats.token": "bus:\n  nats:\n    token: {value}\n",
    "bus.redis.password": "bus:\n  redis:\n    password: {value}\n",
}
CREDS = (
    "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.sig\n"
    "------END NATS USER JWT------\n\n"
    "-----BEGIN USER NKEY SEED-----\nSUAMK2FG4MI6UE3ACF3FK3OIQBCEIEZV7NSWFFEW63UXMRLFM2XLAXK4GY\n"
    "------END USER NKEY SEED------\n"
)


def _env(key: str) -> str:
    return "FLOWGAUGE_" + key.upper().replace(".", "__")


def _problems(path: Path | None, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ)
    return caught.value.problems


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("key", list(SECRET_KEYS))
def test_a_secret_in_the_config_file_is_refused_in_one_line(tmp_path: Path, key: str) -> None:
    path = _write(tmp_path, SECRET_KEYS[key].format(value="hunter2-secret"))

    problems = _problems(path, {})

    assert problems == [
        f"{key}: a secret is not read from a config file: set {_env(key)}, or {key}_file (a file holding only "
        "the secret)"
    ]
    assert "hunter2-secret" not in str(problems)


@pytest.mark.parametrize("key", list(SECRET_KEYS))
def test_a_secret_from_its_file_or_the_environment(tmp_path: Path, key: str) -> None:
    secret_file = _write(tmp_path, "from-file-s3cret\n", "secret")
    section, _, name = key.rpartition(".")
    extra = {"FLOWGAUGE_BUS__NATS__USER": "app"} if key == "bus.nats.password" else {}

    from_file = load_settings(None, {_env(f"{key}_file"): str(secret_file), **extra})
    from_env = load_settings(None, {_env(key): "from-env s3cret", **extra})

    def value(settings: object) -> object:
        node = settings
        for seg in key.split("."):
            node = getattr(node, seg)
        return node

    assert value(from_file) == "from-file-s3cret"  # the trailing newline stripped
    assert value(from_env) == "from-env s3cret"  # verbatim
    for settings, secret in ((from_file, "from-file-s3cret"), (from_env, "from-env s3cret")):
        assert secret in secret_values(settings)
        shown = redacted(settings)
        node = shown
        for seg in key.split("."):
            node = node[seg]
        assert node == "***"
        assert secret not in repr(shown)
    # The file key itself (a path, not a secret) is shown as it is.
    node = redacted(from_file)
    for seg in section.split("."):
        node = node[seg]
    assert node[f"{name}_file"] == str(secret_file)


def test_the_file_key_may_be_in_the_config_file(tmp_path: Path) -> None:
    secret_file = _write(tmp_path, "tok-from-file\r\n", "token")
    path = _write(tmp_path, f"http:\n  token_file: {secret_file}\n")
    assert load_settings(path, {}).http.token == "tok-from-file"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("", "{path} is empty"),
        ("\n\n", "{path} is empty"),
        ("one\ntwo\n", "{path} holds more than one line: the file must hold the secret alone"),
        (b"\xff\xfe", "{path} is not UTF-8 text"),
        ("x" * 70000, "{path} is larger than 64 KiB: not a secret file"),
    ],
)
def test_an_unusable_secret_file_is_one_problem_line(tmp_path: Path, content: str | bytes | None, why: str) -> None:
    path = tmp_path / "secret"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)

    problems = _problems(None, {"FLOWGAUGE_BUS__EMBEDDED__TOKEN_FILE": str(path)})

    assert problems == [
        f"bus.embedded.token_file: {why.format(path=path)} (set by FLOWGAUGE_BUS__EMBEDDED__TOKEN_FILE)"
    ]


def test_a_directory_or_both_sources_or_an_empty_path_are_refused(tmp_path: Path) -> None:
    assert _problems(None, {"FLOWGAUGE_HTTP__TOKEN_FILE": str(tmp_path)}) == [
        f"http.token_file: cannot read {tmp_path}: Is a directory (set by FLOWGAUGE_HTTP__TOKEN_FILE)"
    ]
    secret_file = _write(tmp_path, "t1", "t")
    assert _problems(None, {"FLOWGAUGE_HTTP__TOKEN_FILE": str(secret_file), "FLOWGAUGE_HTTP__TOKEN": "t2"}) == [
        "http.token_file: set either http.token_file or FLOWGAUGE_HTTP__TOKEN, not both (set by "
        "FLOWGAUGE_HTTP__TOKEN_FILE)"
    ]
    path = _write(tmp_path, 'http:\n  token_file: ""\n')
    assert _problems(path, {}) == ["http.token_file: must be null or the path of a file"]


def test_an_environment_value_that_is_not_utf8_is_one_problem_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A variable holding bytes that are not UTF-8 reaches os.environ as lone surrogates (`\\udcff`). As a token it
    used to be taken, then every request presenting a token got HTTP 500 with a traceback (the comparison encodes
    it) and `check-config --print` died with a traceback. Now it is one problem line that does not echo it."""
    environ = {"FLOWGAUGE_HTTP__TOKEN": "sekr\udcffit", "FLOWGAUGE_BUS__EMBEDDED__TOKEN_FILE": "/run/s\udcffcret"}

    assert _problems(None, environ) == [
        "bus.embedded.token_file: not UTF-8 text (set by FLOWGAUGE_BUS__EMBEDDED__TOKEN_FILE)",
        "http.token: not UTF-8 text (set by FLOWGAUGE_HTTP__TOKEN)",
    ]
    assert check_config_main(None, True, environ) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err and "sekr" not in captured.err


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """A named pipe given as a secret file (a mistake, or a trap): opening it for reading would wait for a writer
    forever. It is refused at once in one line, the load running in a thread so that a hang fails the test."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for name in ("FLOWGAUGE_HTTP__TOKEN_FILE", "FLOWGAUGE_BUS__NATS__CREDENTIALS_FILE"):
        outcome: list[list[str]] = []
        loader = threading.Thread(target=lambda n=name, out=outcome: out.append(_problems(None, {n: str(fifo)})))
        loader.daemon = True
        loader.start()
        loader.join(5.0)
        assert not loader.is_alive(), f"loading {name}={fifo} hangs"
        key = name[len("FLOWGAUGE_") :].lower().replace("__", ".")
        assert outcome == [[f"{key}: cannot read {fifo}: not a regular file (set by {name})"]]


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("bus.nats.url", "nats://app:pw-in-url@127.0.0.1:4222"),
        ("bus.nats.url", "nats://127.0.0.1:4222,nats://app:pw-in-url@10.0.0.2:4222"),
        ("bus.nats.url", "nats://tok-in-url@127.0.0.1:4222"),  # a lone user name is a NATS token
        ("bus.redis.url", "redis://:pw-in-url@127.0.0.1:6379/0"),
        ("bus.redis.url", "redis://app:pw-in-url@127.0.0.1:6379/0"),
        ("bus.redis.url", "redis://127.0.0.1:6379/0?password=pw-in-url"),
    ],
)
def test_a_url_with_a_secret_is_refused_from_the_file_and_taken_from_the_environment(
    tmp_path: Path, key: str, url: str
) -> None:
    backend = key.split(".")[1]
    path = _write(tmp_path, yaml.safe_dump({"bus": {backend: {"url": url}}}))

    problems = _problems(path, {})

    assert len(problems) == 1
    assert problems[0].startswith(
        f"{key}: holds a password or token: a secret is not read from a config file: set "
        f"the URL in {_env(key)}, or keep it without the secret and set bus.{backend}."
    )
    assert "in-url" not in problems[0]
    settings = load_settings(None, {_env(key): url})
    assert getattr(settings.bus, backend).url == url
    assert "in-url" not in repr(redacted(settings))
    assert any("in-url" in value for value in secret_values(settings))


def test_urls_without_a_secret_stay_in_the_file(tmp_path: Path) -> None:
    text = "bus:\n  nats:\n    url: nats://127.0.0.1:4222\n  redis:\n    url: redis://app@127.0.0.1:6379/0\n"
    settings = load_settings(_write(tmp_path, text), {})
    assert settings.bus.redis.url == "redis://app@127.0.0.1:6379/0"  # a Redis user name alone is no secret
    assert secret_values(settings) == []


def test_url_problems_never_echo_the_password() -> None:
    problems = _problems(None, {"FLOWGAUGE_BUS__REDIS__URL": "http://:pw-in-url@cache:6379"})
    assert problems == [
        "bus.redis.url: must be a redis:// or rediss:// URL (got 'http://:***@cache:6379') "
        "(set by FLOWGAUGE_BUS__REDIS__URL)"
    ]


@pytest.mark.parametrize(
    ("key", "url", "secret"),
    [
        ("bus.nats.url", "nats://app:ab/cdSECRET@127.0.0.1:4222", "ab/cdSECRET"),  # base64 holds raw slashes
        ("bus.nats.url", "nats://app:ab?cdSECRET@127.0.0.1:4222", "ab?cdSECRET"),
        ("bus.nats.url", "nats://app:ab#cdSECRET@127.0.0.1:4222", "ab#cdSECRET"),
        ("bus.nats.url", "nats://tok/SECRET@127.0.0.1:4222", "tok/SECRET"),  # parses: host 'tok', path '/SECRET@...'
        ("bus.nats.url", "app:abSECRET@127.0.0.1:4222", "abSECRET"),  # no scheme
        ("bus.redis.url", "redis://:ab/cdSECRET@127.0.0.1:6379/0", "ab/cdSECRET"),
    ],
)
def test_a_password_that_breaks_the_url_is_never_echoed(tmp_path: Path, key: str, url: str, secret: str) -> None:
    """A password holding a raw / ? or # (or a URL without its scheme) ends the userinfo where the URL parser
    sees none: such a URL is refused from the environment too (its host is a piece of the secret), and no problem
    line shows any piece of the secret, not even one quoted by the parser ("... integer value as 'ab'")."""
    backend = key.split(".")[1]
    path = _write(tmp_path, yaml.safe_dump({"bus": {backend: {"url": url}}}))
    pieces = [piece for piece in re.split(r"[/?#]", secret) if piece]

    for problems in (_problems(path, {}), _problems(None, {_env(key): url})):
        assert problems, url
        assert all(key in problem for problem in problems), problems
        assert not [problem for problem in problems for piece in pieces if f"'{piece}" in problem], problems
        assert not [problem for problem in problems if "SECRET" in problem], problems
        # What to do instead: nats-py sends a URL's userinfo undecoded, redis-py decodes %-escapes.
        if "://" in url:
            fix = "bus.nats.password_file" if backend == "nats" else "must be percent-encoded"
            assert fix in problems[-1], problems
    assert redact_url(url) == url.replace(secret, "***")


def test_redact_url() -> None:
    assert redact_url("nats://a:b@h:1, nats://tok@h2:2,nats://h3:3") == "nats://a:***@h:1, nats://***@h2:2,nats://h3:3"
    assert redact_url("redis://u:p%40ss@h/0?password=x&db=1") == "redis://u:***@h/0?password=***&db=1"
    assert redact_url("redis://h/0") == "redis://h/0"


def _nkeys_installed(monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    """Make the nkeys package (nats-py's optional extra for .creds files) findable or not, whichever is here."""
    module = types.ModuleType("nkeys")
    module.__spec__ = importlib.machinery.ModuleSpec("nkeys", None)
    monkeypatch.setitem(sys.modules, "nkeys", module if installed else None)


def test_nats_authentication_is_one_way_with_both_halves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _nkeys_installed(monkeypatch, True)
    password = _write(tmp_path, "pw", "pw")
    token = _write(tmp_path, "tk", "tk")
    creds = _write(tmp_path, CREDS, "app.creds")
    url = {"FLOWGAUGE_BUS__NATS__URL": "nats://127.0.0.1:4222"}
    assert _problems(None, {**url, "FLOWGAUGE_BUS__NATS__USER": "app"}) == [
        "bus.nats.user: needs a password: set bus.nats.password_file or FLOWGAUGE_BUS__NATS__PASSWORD "
        "(set by FLOWGAUGE_BUS__NATS__USER)"
    ]
    assert _problems(None, {**url, "FLOWGAUGE_BUS__NATS__PASSWORD_FILE": str(password)}) == [
        "bus.nats.password: needs bus.nats.user (the password came from bus.nats.password_file or "
        "FLOWGAUGE_BUS__NATS__PASSWORD)"
    ]
    problems = _problems(
        None,
        {
            **url,
            "FLOWGAUGE_BUS__NATS__USER": "app",
            "FLOWGAUGE_BUS__NATS__PASSWORD_FILE": str(password),
            "FLOWGAUGE_BUS__NATS__TOKEN_FILE": str(token),
        },
    )
    assert problems == [
        "bus.nats: set one way to authenticate, not several (got user/password, token) (set by "
        "FLOWGAUGE_BUS__NATS__PASSWORD_FILE, FLOWGAUGE_BUS__NATS__TOKEN_FILE, "
        "FLOWGAUGE_BUS__NATS__URL, FLOWGAUGE_BUS__NATS__USER)"
    ]
    with_creds = load_settings(None, {**url, "FLOWGAUGE_BUS__NATS__CREDENTIALS_FILE": str(creds)})
    assert with_creds.bus.nats.credentials_file == str(creds)
    not_creds = _problems(None, {**url, "FLOWGAUGE_BUS__NATS__CREDENTIALS_FILE": str(token)})
    assert not_creds == [
        f"bus.nats.credentials_file: {token} is not a NATS credentials file (no -----BEGIN NATS "
        "USER JWT----- block) (set by FLOWGAUGE_BUS__NATS__CREDENTIALS_FILE)"
    ]
    redis = {"FLOWGAUGE_BUS__REDIS__URL": "redis://:a@h/0", "FLOWGAUGE_BUS__REDIS__PASSWORD": "b"}
    assert [p.split(":")[0] for p in _problems(None, redis)] == ["bus.redis.password"]


def test_a_creds_file_without_nkeys_is_one_problem_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nats-py signs with a .creds file through the nkeys package, an optional extra imported only when it
    connects: without it every connection fails after start (ModuleNotFoundError) and nothing reaches NATS. The
    config names the missing package instead, in one line, while NATS publishing is on."""
    creds = _write(tmp_path, CREDS, "app.creds")
    _nkeys_installed(monkeypatch, False)
    environ = {"FLOWGAUGE_BUS__NATS__CREDENTIALS_FILE": str(creds)}

    problems = _problems(None, {**environ, "FLOWGAUGE_BUS__NATS__URL": "nats://127.0.0.1:4222"})

    assert problems == [
        "bus.nats.credentials_file: needs the nkeys package, which nats-py uses to sign with a .creds file: "
        "pip install 'nats-py[nkeys]' (set by FLOWGAUGE_BUS__NATS__CREDENTIALS_FILE)"
    ]
    assert load_settings(None, environ).bus.nats.url is None  # NATS off: the file is not used, nothing to refuse


def test_check_config_print_shows_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = _write(tmp_path, "file-token-9f2\n", "token")
    environ = {
        "FLOWGAUGE_HTTP__TOKEN_FILE": str(token),
        "FLOWGAUGE_BUS__EMBEDDED__TOKEN": "env-token-4c1",
        "FLOWGAUGE_BUS__NATS__URL": "nats://app:nats-pw-77@127.0.0.1:4222",
        "FLOWGAUGE_BUS__REDIS__URL": "redis://127.0.0.1:6379/0",
        "FLOWGAUGE_BUS__REDIS__PASSWORD": "redis-pw-88",
    }

    assert check_config_main(None, True, environ) == 0

    out = capsys.readouterr().out
    for secret in ("file-token-9f2", "env-token-4c1", "nats-pw-77", "redis-pw-88"):
        assert secret not in out
    printed = yaml.safe_load(out.partition("\n")[2])
    assert printed["http"]["token"] == "***" and printed["http"]["token_file"] == str(token)
    assert printed["bus"]["embedded"]["token"] == "***"
    assert printed["bus"]["nats"]["url"] == "nats://app:***@127.0.0.1:4222"
    assert printed["bus"]["redis"]["password"] == "***"


def test_log_lines_hide_registered_secrets() -> None:
    """Both formatters, whoever logs: message, fields, arguments and tracebacks (a connection error echoing a
    URL with its password)."""
    secret = "log-s3cret-51e"
    logs.register_secrets([secret, ""])  # empty values are ignored (they would match everywhere)
    record = logging.LogRecord(
        "nats.aio.client", logging.ERROR, __file__, 1, "connect to %s failed", (f"nats://app:{secret}@h:4222",), None
    )
    record.fields = {"url": f"nats://app:{secret}@h:4222", "attempt": 3, "nested": {"k": [secret]}}
    try:
        raise OSError(f"refused: nats://app:{secret}@h:4222")
    except OSError:
        import sys

        record.exc_info = sys.exc_info()

    line = logs.JsonFormatter().format(record)
    console = logs.ConsoleFormatter("%(message)s %(fields)s").format(record)

    assert secret not in line and secret not in console
    entry = orjson.loads(line)  # still one valid JSON object
    assert entry["event"] == "connect to nats://app:***@h:4222 failed"
    assert entry["url"] == "nats://app:***@h:4222" and entry["attempt"] == 3
    assert entry["nested"] == {"k": ["***"]}
    assert "refused: nats://app:***@h:4222" in entry["exc"]
    assert logs.redact({"a": (f"x{secret}y", 1)}) == {"a": ["x***y", 1]}


def test_configured_console_handler_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "console-s3cret-0d9"
    logs.register_secrets([secret])
    stream = io.StringIO()
    stream.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stdout", stream)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("INFO")
        logs.event(logging.getLogger("t"), logging.WARNING, "redis_unreachable", error=f"AUTH {secret} refused")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "redis_unreachable" in stream.getvalue()
    assert secret not in stream.getvalue() and "AUTH *** refused" in stream.getvalue()


async def test_status_and_readyz_documents_hide_registered_secrets() -> None:
    """A status document whose strings carry a secret (a venue or broker error echoing a URL) is served with
    `***` in its place, on /status and on the open /readyz; a real aiohttp server on loopback."""
    import aiohttp
    from prometheus_client import CollectorRegistry

    from flowgauge.telemetry.http import HttpServer

    secret = "status-s3cret-2b7"
    logs.register_secrets([secret])
    error = f"ConnectionError: redis://:{secret}@cache:6379/0 refused"
    server = HttpServer(
        "127.0.0.1",
        0,
        CollectorRegistry(),
        lambda: False,
        lambda: {"publishers": {"redis": {"last_error": error}}},
        not_ready=lambda: {"reason": error},
    )
    async with server, aiohttp.ClientSession() as session:
        for path in ("/status", "/readyz"):
            async with session.get(f"http://127.0.0.1:{server.bound_port}{path}") as response:
                body = await response.text()
            assert secret not in body, path
            assert "redis://:***@cache:6379/0" in body, body
