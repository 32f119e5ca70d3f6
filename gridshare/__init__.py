"""gridshare: grid-safe settlement backend for local energy communities.

The application package: the ``gridshare`` command line and the on-chain unit scales.
The numerical and chain work lives in the sibling packages ``capacity``, ``market`` and
``oracle``.
"""

__version__ = "0.1.0"
