"""The real code location, loaded once for the tests, and pointed at test files when asked."""

from pathlib import Path

import dagster as dg

from churn_platform import definitions
from churn_platform.defs.resources import build_resources

defs: dg.Definitions = definitions.defs()


def platform_defs(database: Path | str, csv: Path | str,
                  model_dir: Path | str | None = None) -> dg.Definitions:
    """The code location's assets, checks, jobs and sensors, the warehouse, source and model
    folder at test files (the models beside the warehouse unless given)."""
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        schedules=defs.schedules,
        sensors=defs.sensors,
        executor=defs.executor,
        resources=build_resources(str(database), str(csv),
                                  model_dir=str(model_dir or Path(database).parent / "models")),
    )
