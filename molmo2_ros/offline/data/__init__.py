"""Bags in and out (reading any rosbag2 / ROS 1 camera bag, depth feeding, playing bags into ROS, video to bag) and
the synthetic scenarios with their ground truth (2D and 3D)."""
