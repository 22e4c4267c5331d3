"""The evaluate job: blind pairwise comparison of two systems."""
