from runtime.testing.fleet import fleet_factory  # noqa: F401  (fixture)
