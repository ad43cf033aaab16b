"""Benchmarks of the train / eval steps against PyTorch mirrors; see benchmarks/README.md."""
