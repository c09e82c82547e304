"""Recording, conversion and datasets: rosbag2 episodes -> LeRobot v3-style datasets.

- ``topics``      which topics an embodiment needs recorded (ROS-free)
- ``record``      ``pi0-ros record``: one rosbag2 (mcap) directory per episode (core is ROS-free;
                  the rclpy node is pi0_ros/ros/recorder_node.py)
- ``bag2dataset`` ``pi0-ros bag2dataset``: bags (mcap or sqlite3) -> dataset (parquet + images + stats)
  - ``bag_read``       pass 0/1: check a bag, read it into time series (no pixels)
  - ``episodes``       plan episodes: split, resample onto the frame clock, label actions
  - ``lerobot_writer`` the LeRobot v3.0 layout writer (also used by collect-takeover)
  - ``dataset_stats``  LeRobot stats and openpi norm stats
- ``dataset``     a torch Dataset reading that layout back as training samples
- ``bagio``       rosbags typestore with this package's messages registered
- ``synthetic``   synthetic episode bags for any embodiment (tests, demos, benchmarks)
"""
