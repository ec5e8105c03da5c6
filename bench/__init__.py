"""storyd's benchmarks: `make bench` (or `python -m bench [NAME ...]`) prints one table per module."""
