from pat_runtime.testing.fleet import fleet_factory  # noqa: F401  (fixture)
