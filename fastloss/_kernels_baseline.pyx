# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fastloss native kernels compiled for the baseline instruction set (x86-64: SSE2; aarch64: NEON; any other CPU: its default).

The code is _kernels.pyx, shared by every level module; setup.py sets the
instruction set, fastloss/_backend.py picks the module at import.
"""
include "_kernels.pyx"
