"""Instance labels: the container, the result-file format and the label algebra (CALA)."""

from .instances import Instances, read_instances, write_instances

__all__ = ["Instances", "read_instances", "write_instances"]
