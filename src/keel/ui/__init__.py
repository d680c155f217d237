"""The dashboard: an ASGI app over a Keel store (``keel ui``, or mounted in your own app).

Needs the ``ui`` extra (``pip install 'keel[ui]'``). :func:`create_app` builds
the app; see the README's dashboard section for what it shows and what an
operator token allows.
"""

from keel.ui.app import create_app

__all__ = ["create_app"]
