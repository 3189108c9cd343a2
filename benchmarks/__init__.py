"""Speed and memory benchmarks that print ratios measured in one run (see README.md)."""
