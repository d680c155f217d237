"""Workflow modules the acceptance tests load into real ``keel worker`` processes."""
