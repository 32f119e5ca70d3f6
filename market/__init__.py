"""Local market: order clearing, community battery, hour-ahead aggregator and the REST API."""
