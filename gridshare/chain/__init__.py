"""Chain access shared by the market and the oracle.

``client`` (web3 connection, signing, sending, reverts as one error), ``config`` (chain selection,
keys), ``errors``, ``deploy``, ``build`` (contract compile into ``artifacts/``), ``devnet`` (Besu
QBFT files), ``events`` (the one windowed, reorg-aware log reader), ``sqlite`` (schema versions and
transactions of every store). Knows nothing of the market's or the oracle's rules.
"""
