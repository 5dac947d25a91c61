"""Discovery, the rate-limit probe, the collector, the parquet store and (later) the quality gate."""
