"""Storage for sae-atlas: HDF5 transcript, activation, labels and atlas files (h5py, numpy, pandas
only).

The layouts are declared in `feature_store.schema`; nothing here imports torch or model code.
"""

from feature_store.errors import StoreError
from feature_store.schema import ROLE_CODE, ROLES, SCHEMA_VERSION

__all__ = ["ROLES", "ROLE_CODE", "SCHEMA_VERSION", "StoreError"]
