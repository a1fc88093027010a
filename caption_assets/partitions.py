"""One dynamic partition per crawl shard, registered by the crawl sensor."""

from dagster import DynamicPartitionsDefinition

shards_partitions = DynamicPartitionsDefinition(name="shards")
