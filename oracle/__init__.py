"""Chain access, deployment, event ingestion, the oracle loop, settlement glue and DSO audit."""
