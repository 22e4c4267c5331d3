"""The pipeline: the four jobs chained, locally or as dependent cluster jobs."""
