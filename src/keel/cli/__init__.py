"""The ``keel`` command line (click + rich); the entry point is :func:`keel.cli.main.main`."""
