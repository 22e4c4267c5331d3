"""alpaca-jobs: the Alpaca recipe as containerized cluster jobs (generate, train, serve, evaluate)."""

__version__ = "0.1.0"
