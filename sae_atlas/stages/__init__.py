"""The pipeline's stages, each a module or package that only orchestrates: corpus, harvest,
train (+ evaluate), label, organize, dynamics, report. `base` holds what they share.

Every stage function reads the same way:

    stage(inputs..., out, config, *, handle=None, progress=None) -> result

- inputs: what the stage reads, in pipeline order, each the output of an earlier stage given as
  its path or as the object already opened or loaded (a TranscriptStore or list of Transcripts,
  an ActivationStore, an SAE, Labels; the corpus's input is a persona Catalogue);
- out: the path the stage writes (a file, or a folder for train and report);
- config: the stage's section of `sae_atlas.config.BuildConfig`;
- handle: the loaded model (`sae_atlas.model.ModelHandle`), keyword-only, for the stages that
  run it (required by corpus and harvest);
- progress: keyword-only, a `base.CountProgress` (called with the number of items just done:
  jobs, tokens, steps) or, for stages made of named steps, a `base.StepProgress` (called with
  the name of the step about to start).

A stage returns a `base.StageResult` (or a subclass with its counts): where it wrote, its
seconds, and whether it was skipped because `out` already held its output for the same identity
(`base.existing_output`; stores written in resumable commits use
`feature_store.appendable.store_state`, which also says when to resume). Output of another
identity is refused, never overwritten.
"""
