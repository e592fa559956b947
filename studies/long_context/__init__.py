"""The long-context study (docs/LONG_CONTEXT.md): its own DVC pipeline, run with
`dvc repro studies/long_context/dvc.yaml` from the repository root."""
