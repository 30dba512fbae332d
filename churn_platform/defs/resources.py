"""Resources: the warehouse (one DuckDB file, one IO manager) and the run's source settings.

The source's paths and the names of secret variables are deployment settings, read from the
environment when the code location loads: whoever can launch a run (the Launchpad, the GraphQL
API) must not point the load at another file or turn another secret into the key. So they are
plain objects given to Dagster as they are, with no config schema: run config that names them is
refused before any step starts.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from churn_platform.core import settings
from churn_platform.core.churn_model import (
    ChurnModel,
    ModelIntegrityError,
    file_name,
    load_linear_model,
    save_model,
)
from churn_platform.core.mapping import SourceMapping, load_mapping
from churn_platform.core.pseudonymize import checked_key
from churn_platform.defs.failures import reported_as_failure
from churn_platform.defs.warehouse_io import (
    TrainingFrameIOManager,
    WarehouseIOManager,
    WarehouseResource,
)

# The input manager of the model's training frame (pandas): only that input names it.
TRAINING_FRAMES = "training_frames"


@dataclass(frozen=True)
class ChurnSource:
    """Which CSV to load and how to read it (its source mapping), fixed when the location loads.

    The pseudonymization key is read at run time from CHURN_PSEUDONYMIZATION_KEY and never
    becomes config, so it never shows in the UI.
    """

    csv_path: str
    mapping_path: str = str(settings.DEFAULT_SOURCE_MAPPING)

    def mapping(self) -> SourceMapping:
        with reported_as_failure():
            return load_mapping(self.mapping_path)

    def pseudonymization_key(self) -> bytes | None:
        """The key, if set; a weak one fails the run (once) saying how to make a good one."""
        key = os.environ.get(settings.PSEUDONYMIZATION_KEY_ENV)
        if not key:
            return None
        with reported_as_failure():
            return checked_key(key, settings.PSEUDONYMIZATION_KEY_ENV)


class MetricsDatabase:
    """The metrics database's DSN (a libpq connection string), read at run time from
    CHURN_METRICS_DSN: it never becomes config, so it never shows in the UI or the run's logs."""

    dsn_env = settings.METRICS_DSN_ENV

    def dsn(self) -> str | None:
        return settings.metrics_dsn()


def _fixed(value: object, description: str) -> dg.ResourceDefinition:
    """A resource that is exactly `value`: its config schema is empty, so any run config for it is
    refused by Dagster's validation, before a step starts. (A bare object would be given a
    permissive schema: the config would be accepted and silently ignored.)"""
    return dg.ResourceDefinition(resource_fn=lambda _: value, config_schema={},
                                 description=description)


@dataclass(frozen=True)
class ChurnModelStore:
    """The folder of churn models (CHURN_MODEL_DIR): one `<version>.zip` file each, owner-only.

    Loading reads the card (features, bands, the linear form scoring uses) after checking the
    file's SHA-256 against the version the warehouse recorded: a changed or foreign file fails
    the step, naming the file.
    """

    directory: str

    def path(self, version: str) -> Path:
        return Path(self.directory) / file_name(version)

    def save(self, model: ChurnModel) -> tuple[Path, str]:
        return save_model(model, self.directory)

    def load(self, version: str) -> ChurnModel:
        """The model as scoring and the gate use it (no scikit-learn, ONNX or pandas)."""
        path = self.path(version)
        if not path.exists():
            raise dg.Failure(
                f"model file {path} (version {version}, recorded as promoted in the warehouse) is"
                " missing: restore it into CHURN_MODEL_DIR (or point CHURN_MODEL_DIR at the"
                " folder that holds it); training compares with it and scoring uses it",
                allow_retries=False)
        try:
            return load_linear_model(path, version)
        except ModelIntegrityError as error:
            raise dg.Failure(str(error), allow_retries=False) from None


def build_resources(duckdb_path: str | None = None, source_csv: str | None = None,
                    source_mapping: str | None = None, model_dir: str | None = None) -> dict:
    """The resource set; arguments override the environment (tests point at temporary files)."""
    database = duckdb_path or settings.duckdb_path()
    config = settings.duckdb_config()
    return {
        "io_manager": WarehouseIOManager(database=database, connection_config=config),
        TRAINING_FRAMES: TrainingFrameIOManager(database=database, connection_config=config),
        "warehouse": WarehouseResource(database=database, connection_config=config),
        "churn_source": _fixed(
            ChurnSource(
                csv_path=source_csv or settings.source_csv(),
                mapping_path=source_mapping or settings.source_mapping(),
            ),
            "The source CSV and its mapping (CHURN_SOURCE_CSV, CHURN_SOURCE_MAPPING): deployment"
            " settings, not run config.",
        ),
        "metrics_db": _fixed(
            MetricsDatabase(), "The metrics database, from CHURN_METRICS_DSN; not run config."
        ),
        "churn_models": _fixed(
            ChurnModelStore(directory=str(model_dir or settings.model_dir())),
            "The folder of churn models, from CHURN_MODEL_DIR; not run config.",
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    """The resources every asset, check and sensor of the location is given."""
    return dg.Definitions(resources=build_resources())
