"""ρ-Diffusion core library: schedules, networks, conditioning, samplers, training, data.

Plain Python + torch/numpy/scipy/zarr/dask. Nothing here imports Prefect or MLflow.
"""

__version__ = "0.1.0"
