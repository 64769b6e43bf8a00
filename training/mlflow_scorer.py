"""The MLflow pyfunc of every siyu model, logged as code (MLflow "models from code").

`training.model_registry.log_model` passes this file's path as `python_model`, with the
model folder (scorer.json + the kind's files, see training.scorer_files) as the artifact
`scorer`. MLflow stores the file's text and runs it at load time: nothing is unpickled,
so `mlflow models serve` and `mlflow.pyfunc.spark_udf` work with
MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false. It needs the siyu packages importable
(an install of this project), as the previous pickled wrapper did.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class SiyuScorer(PythonModel):
    """Calibrated probabilities of one siyu model for a frame holding its feature columns."""

    def load_context(self, context) -> None:
        from training.scorer_files import load_dir

        self.model = load_dir(context.artifacts["scorer"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        X = pd.DataFrame(model_input)[self.model.feature_names].to_numpy(dtype=float)
        return self.model.predict_proba(X)


mlflow.models.set_model(SiyuScorer())
