"""edxtomo: deep-learning STEM-EDX tomography of nanocrystals."""

__version__ = "0.1.0"
