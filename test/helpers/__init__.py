"""Helpers for the tests: sample messages and small ROS programs the tests start as separate processes."""
