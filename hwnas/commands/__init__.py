"""Sub-commands of the ``hwnas`` CLI, one module per group; each exposes ``register(subparsers)``."""
