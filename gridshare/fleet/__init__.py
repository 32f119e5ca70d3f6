"""A DSO's fleet of feeders: certified OCM bands for many feeders on a Dask cluster.

``sources`` (built-in variants, feeder files) -> ``model`` (what a worker keeps per feeder) ->
``compute`` (one feeder-hour through the oracle's code path) -> ``run`` (tasks, retries,
streaming, resume) -> ``bandfile`` / ``rundir`` (what lands in the output directory);
``cluster`` starts or joins the cluster; ``cli`` is ``gridshare fleet``. Docs: docs/fleet.md.
"""
