"""Start the molmo2 lifecycle node.

    ros2 launch molmo2_ros molmo2.launch.py camera_topic:=/camera/color/image_raw preset:=molmo2-4b

Arguments (see the descriptions below): camera_topic, compressed, preset, model, device, engine, server_url,
params_file, namespace, use_sim_time, autostart, log_level, fastdds_profile, allocator. An argument left empty (the
default for every parameter argument) keeps the value of the params file; the params file keeps the node's own
default (the preset's value where a preset is set).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from molmo2_ros.ros.environment import allocator_env, fastdds_profile_env

ARGUMENTS = [
    ("camera_topic", "camera/image_raw", "Camera topic (sensor_msgs/Image, or CompressedImage with compressed:=true "
                                         "and e.g. camera/image_raw/compressed); a relative name lies in `namespace`."),
    ("compressed", "", "true = subscribe to sensor_msgs/CompressedImage instead of sensor_msgs/Image; "
                       "empty = from params_file (input_compressed)."),
    ("preset", "", "Model preset: tiny (the tiny model shipped with the package), molmo2-4b, molmo2-8b, molmo2-o-7b; "
                   "parameters in params_file still override it; empty = from params_file."),
    ("model", "", "Hub id (allenai/Molmo2-4B, allenai/Molmo2-8B), local model folder or shipped model name; "
                  "empty = from params_file."),
    ("device", "", "auto | cpu | cuda | cuda:N; empty = from params_file."),
    ("engine", "", "transformers | vllm (a vLLM server at server_url); empty = from params_file."),
    ("server_url", "", "engine vllm: http(s)://host:port/v1 of the vLLM server; empty = from params_file."),
    ("params_file", "", "Parameters YAML; empty = this package's config/molmo2_4b.yaml."),
    ("namespace", "", "Namespace of the node (e.g. one per camera)."),
    ("use_sim_time", "", "true = use /clock (bag replay: every clip is processed, outputs depend only on the bag); "
                         "empty = from params_file."),
    ("autostart", "", "false = wait for a lifecycle manager instead of configuring and activating by itself; "
                      "empty = from params_file (default true)."),
    ("log_level", "", "debug | info | warn | error | fatal; empty = the node's default (info)."),
    ("fastdds_profile", "", "Fast DDS XML profile for the node: a file, `shm` = this package's "
                            "config/fastdds_shm.xml (shared memory only: every node it talks to runs on this host), "
                            "empty = the inherited environment. Set under the variable names of $ROS_DISTRO's "
                            "Fast DDS (2.x: FASTRTPS_DEFAULT_PROFILES_FILE too)."),
    ("allocator", "auto", "malloc of the node's process (flat memory over a shift with several cameras: README "
                          "Reliability): auto = tcmalloc where installed (this package depends on it: rosdep key "
                          "gperftools), else nothing preloaded (glibc's, or the allocator an inherited LD_PRELOAD "
                          "names); tcmalloc = preload libtcmalloc_minimal.so.4 (sudo apt "
                          "install libgoogle-perftools-dev), jemalloc = preload libjemalloc.so.2 (sudo apt install "
                          "libjemalloc2), failing the launch when missing; glibc or empty = the inherited "
                          "environment."),
]
BOOLEAN_PARAMETERS = {"compressed": "input_compressed", "use_sim_time": "use_sim_time", "autostart": "autostart"}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _boolean(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text not in _TRUE + _FALSE:
        raise ValueError(f"launch argument {name}:={value!r}: use true or false (or leave it empty)")
    return text in _TRUE


def _node(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    share = get_package_share_directory("molmo2_ros")
    params_file = arg["params_file"] or os.path.join(share, "config", "molmo2_4b.yaml")
    # Only arguments given on the command line override the params file (listed after it).
    overrides = {param: _boolean(name, arg[name]) for name, param in BOOLEAN_PARAMETERS.items() if arg[name].strip()}
    overrides.update({name: arg[name] for name in ("preset", "model", "device", "engine", "server_url") if arg[name]})
    ros_arguments = ["--log-level", arg["log_level"]] if arg["log_level"] else None
    profile = arg["fastdds_profile"]
    if profile == "shm":
        profile = os.path.join(share, "config", "fastdds_shm.xml")
    env = {**(fastdds_profile_env(profile) if profile else {}), **allocator_env(arg["allocator"].strip())}
    return [LifecycleNode(package="molmo2_ros", executable="molmo2_node", name="molmo2", namespace=arg["namespace"],
                          parameters=[params_file, overrides] if overrides else [params_file],
                          remappings=[("image", arg["camera_topic"])], ros_arguments=ros_arguments,
                          additional_env=env or None,
                          output="screen", emulate_tty=True)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([DeclareLaunchArgument(name, default_value=default, description=description)
                              for name, default, description in ARGUMENTS] + [OpaqueFunction(function=_node)])
