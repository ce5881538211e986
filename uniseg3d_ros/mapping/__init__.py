"""The mapping core (no ROS imports): PointCloud2 <-> numpy, RGB-D -> points, stamp sync,
the voxel-hashed scene map and its files, and where the sensor was (poses)."""
