"""One dynamic partition per crawl shard, registered by the crawl sensor; shared op tags."""

from dagster import DynamicPartitionsDefinition

shards_partitions = DynamicPartitionsDefinition(name="shards")

# Model steps: serialised per device by the executor's tag limit (gpu=true -> 1 at a time) and the
# "gpu" pool across runs; on Kubernetes the step pod asks for one GPU (dagster-k8s reads this tag).
GPU_OP_TAGS = {
    "gpu": "true",
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "4", "memory": "16Gi"}}}},
}
