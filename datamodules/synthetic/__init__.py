"""Generators of synthetic data, for when nothing real ships: scenes of shapes with captions, motion clips of
MNIST digits, Moving MNIST, an espeak-ng speech corpus. Each is a pure function of its seed and parameters."""
