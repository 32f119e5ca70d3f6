"""The REST API (FastAPI): the one composition point of the market's gateway and the oracle's audit.

``create_app(chain, deployment, db_path=...)`` builds it; ``gridshare serve`` runs it with
uvicorn. See docs/api.md.
"""

from gridshare.api.app import create_app

__all__ = ["create_app"]
