"""Process set-up for entry points: XLA:CPU flags, the tcmalloc restart, one-line CLI errors.

Used by launch.py and the benchmark scripts before JAX starts; the training core does not import it.
"""
