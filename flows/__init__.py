"""Prefect flows: typed, thin chains of :mod:`tasks`. Each flow is also a plain callable.

- :func:`flows.spherical_harmonics.spherical_harmonics` — generate + normalise SH volumes;
- :func:`flows.galaxy_merger.galaxy_merger` / :func:`flows.galaxy_merger.ingest_bonsai` — merger
  simulations or existing Bonsai snapshots into an image store;
- :func:`flows.train.train`, :func:`flows.evaluate.evaluate`;
- :func:`flows.pipeline.pipeline` (end to end) and :func:`flows.pipeline.retrain`.
"""
