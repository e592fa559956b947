"""The data half of the pipeline: ingest, filter, shard, tokenizer, tokenize."""
