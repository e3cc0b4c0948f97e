"""Start the molmo2 lifecycle node.

    ros2 launch molmo2_ros molmo2.launch.py camera_topic:=/camera/color/image_raw model:=allenai/Molmo2-4B

Arguments (see DeclareLaunchArgument descriptions below): camera_topic, compressed, model, device, engine,
server_url, params_file, namespace, use_sim_time, autostart. An empty model/device/engine/server_url keeps the value
of the params file.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = [
    ("camera_topic", "/camera/image_raw", "Camera topic (sensor_msgs/Image, or CompressedImage with compressed:=true "
                                          "and e.g. /camera/image_raw/compressed)."),
    ("compressed", "false", "Subscribe to sensor_msgs/CompressedImage instead of sensor_msgs/Image."),
    ("model", "", "Hub id (allenai/Molmo2-4B, allenai/Molmo2-8B) or local model folder; empty = from params_file."),
    ("device", "", "auto | cpu | cuda | cuda:N; empty = from params_file."),
    ("engine", "", "transformers | vllm (a vLLM server at server_url); empty = from params_file."),
    ("server_url", "", "engine vllm: http(s)://host:port/v1 of the vLLM server; empty = from params_file."),
    ("params_file", "", "Parameters YAML; empty = this package's config/molmo2_4b.yaml."),
    ("namespace", "", "Namespace of the node (e.g. one per camera)."),
    ("use_sim_time", "false", "Use /clock (bag replay): every clip is processed, outputs depend only on the bag."),
    ("autostart", "true", "Configure and activate by itself; false = wait for a lifecycle manager."),
]


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on")


def _node(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    params_file = arg["params_file"] or os.path.join(get_package_share_directory("molmo2_ros"), "config",
                                                     "molmo2_4b.yaml")
    overrides = {"use_sim_time": _is_true(arg["use_sim_time"]), "autostart": _is_true(arg["autostart"]),
                 "input_compressed": _is_true(arg["compressed"])}
    overrides.update({name: arg[name] for name in ("model", "device", "engine", "server_url") if arg[name]})
    return [Node(package="molmo2_ros", executable="molmo2_node", name="molmo2", namespace=arg["namespace"],
                 parameters=[params_file, overrides], remappings=[("image", arg["camera_topic"])],
                 output="screen", emulate_tty=True)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([DeclareLaunchArgument(name, default_value=default, description=description)
                              for name, default, description in ARGUMENTS] + [OpaqueFunction(function=_node)])
