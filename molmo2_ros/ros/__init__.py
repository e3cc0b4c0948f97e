"""ROS 2 layer of molmo2_ros: the lifecycle node and message conversions (needs rclpy and the built interfaces)."""
