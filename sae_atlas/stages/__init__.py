"""The pipeline's stages, each a module or package that only orchestrates: corpus, harvest,
train (+ evaluate), label, organize, dynamics, report. `base` holds what they share."""
