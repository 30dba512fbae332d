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

from churn_platform.core.settings import PROJECT_ROOT
from churn_platform_tests.stack import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    STACK_WORKSPACE,
    dockerfile_env,
    dockerfile_lines,
    venv_path,
)

DAGSTER_SERVICES = ("code-server", "webserver", "daemon")
PROVISIONING = PROJECT_ROOT / "grafana" / "provisioning"


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
    return {**values, "CHURN_ALERT_WEBHOOK_URL": "https://alerts.example.com/churn"}


@pytest.fixture
def resolved(tmp_path, env_values) -> dict:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env_values.items()))
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


def _host_ports(service: dict) -> dict[int, int]:
    """Container port -> published host port."""
    ports = {}
    for entry in service.get("ports", []):
        if isinstance(entry, str):
            host, container = entry.rsplit(":", 2)[-2:]
        else:
            host, container = entry["published"], entry["target"]
        ports[int(container)] = int(host)
    return ports


def test_the_stack_has_its_five_services(resolved):
    services = resolved["services"]
    assert set(services) == {"postgres", "code-server", "webserver", "daemon", "grafana"}
    assert services["postgres"]["image"] == "postgres:15"  # the major version the tests run on
    assert services["grafana"]["image"].startswith("grafana/grafana:")
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
    for name in ("webserver", "daemon"):
        assert healthy(name) == {"postgres": "service_healthy", "code-server": "service_healthy"}


def test_the_dagster_ui_and_grafana_are_published_on_different_host_ports(resolved, env_values):
    services = resolved["services"]
    dagster_ui, grafana = _host_ports(services["webserver"]), _host_ports(services["grafana"])
    assert dagster_ui == {3000: int(env_values["DAGSTER_UI_PORT"])}
    assert grafana == {3000: int(env_values["GRAFANA_PORT"])}
    assert dagster_ui[3000] != grafana[3000]
    for internal in ("postgres", "code-server", "daemon"):
        assert not services[internal].get("ports"), f"{internal} is reachable inside the stack only"


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
    for name in ("webserver", "daemon"):
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
    assert lines[0] == "FROM python:3.11-slim"
    copies = [line for line in lines if line.startswith("COPY ")]
    install_deps = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    # Only the metadata is copied before the dependency layer, so code changes keep it cached.
    assert lines.index(copies[0]) < install_deps < lines.index(copies[1])
    assert copies[0] == "COPY pyproject.toml ./"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert not [k for k in dockerfile_env() if re.search("PASSWORD|SECRET|KEY|DSN", k)]
    assert not [line for line in lines if line.startswith("ARG ")]


def test_dockerfile_installs_exactly_the_projects_dependencies(tmp_path):
    """The dependency step, as the Dockerfile runs it, lists pyproject.toml's dependencies."""
    step = next(line for line in dockerfile_lines() if "tomllib" in line)
    command = re.search(r'(python -c ".*?")\s*>', step).group(1)
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PATH": venv_path()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    expected = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    assert result.stdout.splitlines() == expected
