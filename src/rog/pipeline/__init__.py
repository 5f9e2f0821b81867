"""The workflow layer: each `rog` command is one call here that takes a typed request and
returns a typed result; the CLI parses and prints, the demo holds its settings.

- `stages`: the re-runnable stages that fill a work directory (fingerprint, plan,
  preprocessing, training and the post-processing decision, test scores, the atlas reference)
- `models`: where a command's model comes from (`ModelSource`: a run, a registered or
  `package.module:factory` model, an nnU-Net model folder, a MONAI bundle)
- `sweeps`: one benchmark of one model (`SweepRequest` -> `SweepResult`): the attacks or the
  corruptions, cases chosen and described for the report
- `predict`: `rog predict` (`PredictRequest` -> `PredictResult`)
- `experiment`: the paper's experiment end to end (`rog demo`, `rog run-paper`)

The folder layouts these fill are `rog.rundir`'s (every layer reads them).
"""
