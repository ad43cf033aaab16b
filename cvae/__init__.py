"""Conditional VAE family (MNIST, CIFAR-10) and the small classifier that judges its outputs."""
