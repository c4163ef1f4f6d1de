"""The benchmarks, run from the repository root as modules (`python -m bench.pipeline_speed --smoke`); their
shared helpers (`bench.common`, `bench.corpus_texts`, `bench.synthetic_shards`) are imported by tests too."""
