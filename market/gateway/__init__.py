"""The order gateway: signed orders accepted into a SQLite store, then relayed to GridMarket.

``OrderGateway`` validates and stores, ``OrderStore`` persists, ``relay`` runs the relay loop in
its own process. The REST API (``gridshare.api``) mounts the gateway; the simulation drives it.
"""

from market.gateway.gateway import GatewaySettings, OrderGateway
from market.gateway.store import OrderStore

__all__ = ["GatewaySettings", "OrderGateway", "OrderStore"]
