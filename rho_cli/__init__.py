"""The ``rho`` command line: one module per command group, registered in :mod:`rho_cli.main`."""
