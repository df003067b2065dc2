"""The HDF5 schema of every file sae-atlas writes, as declarative tables.

Writers create datasets from these specs, readers check them, and the docs and validation read
them too: a dataset's dtype, unit and description live here and nowhere else. Every group and
dataset written gets a `description` attribute (and `unit` where it has one), so any HDF5 client
(h5py, pandas, h5dump) can read a file without this project.

One module per file kind, all re-exported here (`from feature_store.schema import ...`):
- `base`: the spec types (`Column` for row tables, `ArraySpec` for atlas arrays), the schema
  version, the root attributes every file has, and the `runtime` attribute.
- `stores`: transcripts.h5 and activations.h5, append-only row tables (tokens/, transcripts/,
  acts/).
- `atlas_features`: the atlas's sae/, features/ and features/examples/.
- `atlas`: the atlas's personas/, persona_space/, clusters/, its group and root attributes, and
  ATLAS_SPECS (every atlas dataset).
- `experiments`: the atlas's experiments/ group, results of experiments run on a built atlas
  (EXPERIMENTS names each; one group per experiment: described tables, a JSON summary, the
  provenance), which no stage rerun touches.
"""

from feature_store.schema.atlas import (
    ATLAS_GROUP_DESCRIPTIONS,
    ATLAS_KIND,
    ATLAS_ROOT_ATTRS,
    ATLAS_SPECS,
    CLUSTER_COLUMNS,
    CLUSTER_KINDS,
    DEFAULT_CATEGORY,
    DEFAULT_PERSONA_NAME,
    ORGANIZE_SUMMARY_ATTR,
    PERSONA_ARRAYS,
    PERSONA_COLUMNS,
    PERSONA_SPACE_ARRAYS,
    REGION_CENTROIDS_ENTRY,
    REGIONS_ENTRY,
)
from feature_store.schema.atlas_features import (
    EXAMPLE_COLUMNS,
    EXAMPLE_INDEX,
    EXAMPLE_KINDS,
    FEATURE_COLUMNS,
    FEATURE_PERSONA_ARRAYS,
    LIST_SEPARATOR,
    SAE_ARRAYS,
)
from feature_store.schema.base import (
    NAME_BYTES,
    ROOT_ATTRS,
    RUNTIME_ATTR,
    SCHEMA_VERSION,
    TABLE_CHUNK_ROWS,
    ArraySpec,
    Column,
    text_dtype,
)
from feature_store.schema.experiments import (
    EXPERIMENT_ATTRS,
    EXPERIMENT_SUMMARY,
    EXPERIMENT_SUMMARY_DESCRIPTION,
    EXPERIMENTS,
    EXPERIMENTS_DESCRIPTION,
    EXPERIMENTS_GROUP,
    LEGACY_PREFIXES,
)
from feature_store.schema.stores import (
    ACTIVATIONS_KIND,
    ACTS_CHUNK_ROWS,
    GROUP_DESCRIPTIONS,
    PROGRESS_DESCRIPTION,
    ROLE_CODE,
    ROLES,
    SHARDS_ATTR,
    SPLITS,
    TOKEN_COLUMNS,
    TRANSCRIPT_COLUMNS,
    TRANSCRIPTS_KIND,
    acts_column,
)

__all__ = [
    "ACTIVATIONS_KIND",
    "ACTS_CHUNK_ROWS",
    "ATLAS_GROUP_DESCRIPTIONS",
    "ATLAS_KIND",
    "ATLAS_ROOT_ATTRS",
    "ATLAS_SPECS",
    "CLUSTER_COLUMNS",
    "CLUSTER_KINDS",
    "DEFAULT_CATEGORY",
    "DEFAULT_PERSONA_NAME",
    "EXAMPLE_COLUMNS",
    "EXAMPLE_INDEX",
    "EXAMPLE_KINDS",
    "EXPERIMENTS",
    "EXPERIMENTS_DESCRIPTION",
    "EXPERIMENTS_GROUP",
    "EXPERIMENT_ATTRS",
    "EXPERIMENT_SUMMARY",
    "EXPERIMENT_SUMMARY_DESCRIPTION",
    "FEATURE_COLUMNS",
    "FEATURE_PERSONA_ARRAYS",
    "GROUP_DESCRIPTIONS",
    "LEGACY_PREFIXES",
    "LIST_SEPARATOR",
    "NAME_BYTES",
    "ORGANIZE_SUMMARY_ATTR",
    "PERSONA_ARRAYS",
    "PERSONA_COLUMNS",
    "PERSONA_SPACE_ARRAYS",
    "PROGRESS_DESCRIPTION",
    "REGIONS_ENTRY",
    "REGION_CENTROIDS_ENTRY",
    "ROLES",
    "ROLE_CODE",
    "ROOT_ATTRS",
    "RUNTIME_ATTR",
    "SAE_ARRAYS",
    "SCHEMA_VERSION",
    "SHARDS_ATTR",
    "SPLITS",
    "TABLE_CHUNK_ROWS",
    "TOKEN_COLUMNS",
    "TRANSCRIPTS_KIND",
    "TRANSCRIPT_COLUMNS",
    "ArraySpec",
    "Column",
    "acts_column",
    "text_dtype",
]
