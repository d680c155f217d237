"""Keel's test kit for users.

:mod:`keel.testing.conformance` holds the store conformance suite (it needs
pytest, so it is not imported here).
"""
