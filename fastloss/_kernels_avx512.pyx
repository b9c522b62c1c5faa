# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fastloss native kernels compiled for x86-64-v4 (AVX-512).

The code is _kernels.pyx, shared by every level module; setup.py sets the
instruction set, fastloss/_backend.py picks the module at import.
"""
include "_kernels.pyx"
