"""molmo2_ros: video grounding for ROS 2 robots with Ai2's Molmo2.

`molmo2_ros.core` is pure Python (no rclpy). `molmo2_ros.ros` is the ROS layer. After a colcon build,
`molmo2_ros.msg`, `.srv` and `.action` hold the generated interfaces.
"""

# One import name, two folders. The colcon build installs a `molmo2_ros` package into
# install/molmo2_ros/lib/pythonX.Y/site-packages holding the generated msg/srv/action modules (and a copy of
# our sources, so that a robot workspace needs nothing else). In a development checkout the source folder is
# a second `molmo2_ros` on sys.path (scripts/with_ros puts the repository root first on PYTHONPATH).
# extend_path appends every other `molmo2_ros` folder found on sys.path to this package's __path__, after
# the folder this __init__.py was loaded from. So whichever copy is found first supplies `core` and `ros`,
# and `msg`/`srv`/`action`, which exist only in the install space, are found there:
#   - development (scripts/with_ros): source tree first -> edits to core/ros take effect without a rebuild;
#   - robot workspace (source install/setup.bash): only the install space -> everything from there;
#   - no ROS at all (pip install -e .): only the source tree -> `molmo2_ros.core` works, `.msg` is absent.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
