"""Benchmark scripts (run as files: python benchmarks/<name>.py); a package so the import check sees them."""
