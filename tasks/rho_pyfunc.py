"""The MLflow pyfunc model of ρ-Diffusion, logged as *code* (MLflow "models from code").

MLflow stores this file with the model and runs it on load, so no pickled Python object is
involved: the model's artifacts are a bundle folder (``weights.pt``: tensors only, read with
``torch.load(weights_only=True)``; ``model.json``: config, normalisation, sampler defaults — see
:mod:`rho_core.packaging`), and ``rho_core`` travels with the model as a code path.

``predict(model_input, params)``:

- ``model_input``: a table (``pandas.DataFrame`` or list of dicts) with one column per
  conditioning parameter (e.g. ``l``, ``m``) and one row per condition;
- ``params`` (optional): ``n`` fields per row (default 1), ``steps`` and ``sampler`` (``ddim``,
  ``dpmpp``, ``ddpm``; defaults from the bundle), ``seed`` (0), ``guidance`` (1.0);
- returns a ``float32`` array ``(rows * n, C, *spatial)`` in physical units, condition-major.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class RhoDiffusionModel(PythonModel):
    """Samples fields for a table of physical parameters; see the module docstring."""

    def load_context(self, context):
        from rho_core.packaging import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"], device="cpu")

    def predict(self, context, model_input, params=None):
        params = dict(params or {})
        return self.bundle.sample(
            model_input,
            n=int(params.get("n", 1)),
            steps=params.get("steps"),
            sampler=params.get("sampler"),
            seed=int(params.get("seed", 0)),
            guidance=params.get("guidance"),
        )


mlflow.models.set_model(RhoDiffusionModel())
