"""Reference data: generation with OpenMM, the HDF5 data-set format, loaders.

See :mod:`latentlab.data.store` for the file layout and
:mod:`latentlab.data.generate` for how the built-in sets are made.
"""
