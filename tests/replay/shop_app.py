"""``rc_shop`` for ``keel replay --app tests.replay.shop_app``.

The variant (see :mod:`tests.replay.shop`) comes from ``$KEEL_TEST_SHOP_VARIANT``
at import, so a test can "deploy" another version by importing this module again.
"""

from __future__ import annotations

import os

from keel.workflow.registry import default_registry
from tests.replay.shop import define

VARIANT_ENV = "KEEL_TEST_SHOP_VARIANT"

shop = define(os.environ.get(VARIANT_ENV, "v1"), default_registry)
