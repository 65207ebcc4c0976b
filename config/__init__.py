"""The ground floor: every shared setting, read by every package above it.

- ``config.settings``: ports, heaps, directories, the model registry root
  (``PlatformSettings.registry_root``: ``$TRAFFIC_MODEL_REGISTRY``, else ``<work_dir>/models``)
  and where Kafka clients connect (``PlatformSettings.bootstrap_servers``);
- ``config.hdfs``: Beam's HDFS options (``hdfs_host``, ``hdfs_port`` = WebHDFS, ``hdfs_user``).

Nothing here imports another project package.
"""
