"""The workflow layer: each `rog` command is one call here that takes a typed request and
returns a typed result; the CLI parses and prints, the demo holds its settings.

- `stages`: the re-runnable stages that fill a work directory (fingerprint, plan,
  preprocessing, training and the post-processing decision, test scores, the atlas reference)
- `sources`: where a command's model comes from, one frozen dataclass per source (a run, a
  registered, factory or TorchScript model with its plan, a user's model or a run on the scans
  as stored, an nnU-Net model folder, a MONAI bundle), chosen by `source_from`
- `models`: `BenchModel`, what every source loads into (`GridModel`, `ScanModel`)
- `sweeps`: one benchmark of one model (`SweepRequest` -> `SweepResult`): the attacks, the
  corruptions or the worst-case artefacts, cases chosen and described for the report
- `predict`: `rog predict` (`PredictRequest` -> `PredictResult`)
- `experiment`: the paper's experiment end to end (`rog demo`, `rog run-paper`; `Settings` with
  one `DefenceSpec`)

The folder layouts these fill are `rog.rundir`'s (every layer reads them).
"""
