"""The REST API of the market (FastAPI): signed orders in, results, statements, bands, audit out.

``create_app(chain, deployment, db_path=...)`` builds it; ``gridshare serve`` runs it with
uvicorn. See docs/api.md.
"""

from .app import create_app
from .gateway import ChainDown, GatewaySettings, OrderGateway

__all__ = ["ChainDown", "GatewaySettings", "OrderGateway", "create_app"]
