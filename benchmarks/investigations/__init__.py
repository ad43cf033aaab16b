"""One-off tools for finding out why a step is as fast as it is, kept apart from the side-by-side
benchmark (benchmarks/run.py): `ab_step` times several forms of one step in one process,
`profile_step` sums a `jax.profiler` trace by layer, `conv_impls` times single conv and pool
layers under each implementation. Their findings are in docs/performance.md."""
