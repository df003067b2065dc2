"""The atlas: one self-describing HDF5 file (kind sae-atlas/atlas) and its query API.

`AtlasWriter` takes plain numpy arrays and pandas DataFrames built by the science code, checks
every shape against the layout in `feature_store.schema` (ATLAS_SPECS), and writes `sae/`,
`features/` (with `features/examples/`), `personas/`, `persona_space/`, `clusters/` and optional
`dynamics/` and `experiments/<name>/` into a temporary file beside the final path; `finish()`
checks cross-references and renames it into place, so the final path only ever holds a complete
atlas. An exception inside
`with AtlasWriter(...)` removes the temporary file (a `kill -9` can leave a stray `.*.tmp` file
beside the target, never a partial atlas). Writing costs one pass over the arrays given; float
weights are stored uncompressed, other numeric columns gzip-compressed in ~64 KiB chunks.

`Atlas.open(path)` opens the file read-only and reads only its root attributes. Queries return
pandas DataFrames (or small card objects): `feature(i)` reads one row of each feature column, the
feature's slice of the examples table and its decoder row, about a millisecond; small columns
(numeric feature columns, persona names and vectors, the example index) are cached on first use,
text columns when a query needs the whole column (`features()`, `search()`, `persona()`).
`nearest_features` streams the decoder in blocks (one read of W_dec per call, no d_sae x d_sae
matrix). Every problem with the file is a one-line `StoreError`.

`record_experiment(path, ExperimentRecord(...))` writes one experiment into a complete atlas
(replacing that experiment only, atomically); `Atlas.experiments()` and `Atlas.experiment(name)`
read them back lazily.

Modules: `arrays` (conversions and chunk layout), `temporary` (the file being written, checks,
rename), `writer` (one method per section), `reader` (read-only file, cached raw access),
`experiments` (an experiment to write, and read lazily), `queries` (the `Atlas` query API and its
cards).
"""

from feature_store.atlas.arrays import CHUNK_BYTES
from feature_store.atlas.experiments import Experiment, ExperimentRecord, record_experiment
from feature_store.atlas.queries import NEAREST_BLOCK_ROWS, Atlas, FeatureCard, PersonaCard
from feature_store.atlas.reader import AtlasReader
from feature_store.atlas.temporary import SECTIONS
from feature_store.atlas.writer import AtlasWriter

__all__ = [
    "CHUNK_BYTES",
    "NEAREST_BLOCK_ROWS",
    "SECTIONS",
    "Atlas",
    "AtlasReader",
    "AtlasWriter",
    "Experiment",
    "ExperimentRecord",
    "FeatureCard",
    "PersonaCard",
    "record_experiment",
]
