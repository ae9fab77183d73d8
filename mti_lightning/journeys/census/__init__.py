"""The inhibition census: every unit of chosen layers over a data set, ranked by tension."""

from mti_lightning.journeys.census.run import run_census

__all__ = ["run_census"]
