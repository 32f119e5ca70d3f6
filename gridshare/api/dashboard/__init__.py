"""The live dashboard of a deployment (``/dashboard/``, served by ``gridshare serve``).

One HTML page, one small script and one style sheet (``static/``: no CDN, no build step) poll
read-only JSON (``routes.py``) built from the API's own readers (``data.py``); the feeder drawn
as a graph (``feeder.py``). A member's own view signs the API's read proof (EIP-712
``ReadAccess``) with a browser wallet, or takes a signature made by ``python -m
gridshare.api.dashboard.sign``. See docs/dashboard.md.
"""

from .routes import mount_dashboard

__all__ = ["mount_dashboard"]
