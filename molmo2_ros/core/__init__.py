"""ROS-free core: clip buffer, SlowFast sampling, prompts, Molmo2 engine, parsing, grounding, evaluation.

Nothing in this package imports rclpy, so it runs on a robot, offline over a bag, and in tests.
"""
