"""Scripted experiments composed from library pieces: bias–variance and training studies."""

from pinnlab.studies.estimator_study import EstimatorStudySpec as EstimatorStudySpec
from pinnlab.studies.estimator_study import fit_slopes as fit_slopes
from pinnlab.studies.estimator_study import run_estimator_study as run_estimator_study
from pinnlab.studies.training_study import expand_cells as expand_cells
from pinnlab.studies.training_study import run_training_study as run_training_study
from pinnlab.studies.training_study import summarise as summarise

__all__ = [
    "EstimatorStudySpec",
    "expand_cells",
    "fit_slopes",
    "run_estimator_study",
    "run_training_study",
    "summarise",
]
