"""Prefect tasks: thin, restartable wrappers around rho_core that return addresses."""
