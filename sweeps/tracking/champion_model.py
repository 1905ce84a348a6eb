"""The code MLflow runs to build a champion's pyfunc model (a "model from code": nothing pickled); see pyfunc.py."""

from mlflow.models import set_model

from sweeps.tracking.pyfunc import ChampionModel

set_model(ChampionModel())
