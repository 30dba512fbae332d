"""Resources: the warehouse (one DuckDB file, one IO manager) and the run's source settings."""

import os
from pathlib import Path

import dagster as dg

from churn_platform.core import settings
from churn_platform.core.churn_model import ChurnModel, ModelIntegrityError, load_model, save_model
from churn_platform.core.mapping import SourceMapping, load_mapping
from churn_platform.defs.failures import reported_as_failure
from churn_platform.defs.warehouse_io import WarehouseIOManager, WarehouseResource


class ChurnSource(dg.ConfigurableResource):
    """Which CSV to load, how to read it (its source mapping), and which environment variable
    holds the pseudonymization key.

    The key itself is read at run time and never becomes config, so it never shows in the UI.
    """

    csv_path: str
    mapping_path: str = str(settings.DEFAULT_SOURCE_MAPPING)
    pseudonymization_key_env: str = settings.PSEUDONYMIZATION_KEY_ENV

    def mapping(self) -> SourceMapping:
        with reported_as_failure():
            return load_mapping(self.mapping_path)

    def pseudonymization_key(self) -> bytes | None:
        key = os.environ.get(self.pseudonymization_key_env)
        return key.encode() if key else None


class MetricsDatabase(dg.ConfigurableResource):
    """Which environment variable holds the metrics database's DSN (a libpq connection string).

    As with the pseudonymization key, the DSN (and its password) is read at run time and never
    becomes config, so it never shows in the UI or the run's logs.
    """

    dsn_env: str = settings.METRICS_DSN_ENV

    def dsn(self) -> str | None:
        return os.environ.get(self.dsn_env) or None


class ChurnModelStore(dg.ConfigurableResource):
    """The folder of churn models (CHURN_MODEL_DIR): one `<version>.skops` file each, owner-only.

    Loading checks the file's SHA-256 against the version the warehouse recorded and allows
    only the trusted types: a changed or foreign file fails the step, naming the file.
    """

    directory: str

    def path(self, version: str) -> Path:
        return Path(self.directory) / f"{version}.skops"

    def save(self, model: ChurnModel) -> tuple[Path, str]:
        return save_model(model, self.directory)

    def load(self, version: str) -> ChurnModel:
        path = self.path(version)
        if not path.exists():
            raise dg.Failure(
                f"model file {path} (version {version}, recorded as promoted in the warehouse) is"
                " missing: restore it into CHURN_MODEL_DIR (or point CHURN_MODEL_DIR at the"
                " folder that holds it); training compares with it and scoring uses it",
                allow_retries=False)
        try:
            return load_model(path, version)
        except ModelIntegrityError as error:
            raise dg.Failure(str(error), allow_retries=False) from None


def build_resources(duckdb_path: str | None = None, source_csv: str | None = None,
                    source_mapping: str | None = None, model_dir: str | None = None) -> dict:
    """The resource set; arguments override the environment (tests point at temporary files)."""
    database = duckdb_path or settings.duckdb_path()
    config = settings.duckdb_config()
    return {
        "io_manager": WarehouseIOManager(database=database, connection_config=config),
        "warehouse": WarehouseResource(database=database, connection_config=config),
        "churn_source": ChurnSource(
            csv_path=source_csv or settings.source_csv(),
            mapping_path=source_mapping or settings.source_mapping(),
        ),
        "metrics_db": MetricsDatabase(),
        "churn_models": ChurnModelStore(directory=str(model_dir or settings.model_dir())),
    }


@dg.definitions
def resources() -> dg.Definitions:
    """The resources every asset, check and sensor of the location is given."""
    return dg.Definitions(resources=build_resources())
